"""Pure scheduling decisions: queue orderings, placement, preemption, rebalancing. No I/O.

Nothing here imports the rest of Triage, reads a clock or touches the network: every function
takes `now` (seconds, any epoch) as an argument, so the router, the engine and the simulator run
the same code. Priority 0 is the most urgent, 4 the least; any int is accepted.

Stable API (other packages integrate against these names):

- `policies.request`: `Priority`; `RequestState`, the protocol every rule reads
  (request_id, priority, arrival, prompt_tokens, predicted_output_tokens, output_tokens,
  computed_tokens, swapped_tokens, app, tenant); `Request`, a mutable implementation.
- `policies.cost_model`: `CostModel(dc1, dc2, pc1, pc2, swap_s_per_token)` with
  `prefill_seconds`, `decode_seconds`, `decode_step_seconds`, `swap_seconds`,
  `recompute_seconds`, `remaining_seconds(req)`.
- `policies.ordering`: the `Ordering` protocol (`name`, `stable`, `key(req, now)`; smaller key
  first) and FCFS, SJF, PJF, Semantic, MLQ, App-FIFO, UrgentFirst, WSPT (`wsjf`), and
  `KvWeightedShortestJobFirst` (`kv-wsjf`: WSPT over the larger of a request's slot and KV shares).
  `policies.aging.Aged(inner, bound)` composes promotion with any ordering;
  `policies.fair_share.VirtualTokenCounter` is fair share between tenants.
- `policies.admission`: the `Admission` protocol (`opens(free_slots, waiting, running)`,
  `fits(req, members, kv_capacity_tokens)`), asked before a free batch slot is filled;
  `AdmitAll` (fill every slot) and `KvHeadroom(horizon_tokens, group)` (grouped prefills,
  admission only while the batch's near-term KV fits).
- `policies.queue.RequestQueue(ordering)`: push(req, now) O(1), peek(now), pop(now) O(log n)
  amortized, remove(request_id) O(1), peek_id(request_id), drain(), len, `in`, iteration.
- `policies.preemption`: `choose_victim(candidates, cost, rank=None)`, `victim_rank`,
  `choose_mode(cost, tokens, host_free_tokens=None) -> PreemptionMode`, and
  `plan_evictions(need, free, candidates, blocks, rank, requester_rank)` (evict only
  lower-ranked requests, and only when that makes room).
- `policies.placement`: `BackendState` snapshots in, a `Placement` (chosen backend plus a
  score and reason per candidate) out, from RoundRobin, LeastLoad, PowerOfTwoChoices,
  CacheAffinity and QosAware placers.
- `policies.rebalancing`: `balance_pairs`, `specialise_by_cache_size` -> `Migration`s.
- `policies.catalog`: `make_ordering(name, cost, aging_bound, wsjf_weights=None,
  kv_capacity_tokens=None, batch_limit=None)` and `make_admission(name, prefill_stalls_decode=True)`
  for the names configuration uses (`policy_names()`); `DEFAULT_POLICY` is "kv-wsjf+aging".
- `policies.sim`: the discrete-event simulator and its CLI (`policies.sim.cli`).

Design notes and invariants: docs/design/policies.md.
"""
