"""A discrete-event simulator of LLM serving replicas, driven by the policies in `policies`.

- `hardware`: the paper's settings (cost coefficients, KV budget).
- `workload`: the paper's workload and a realistic one (Poisson/bursty, shared prefixes), with
  the length predictor, the predictor delay and error injection.
- `replica`: one replica with continuous batching, a KV block budget and preemption.
- `simulator`: replicas, placement and the event loop; `simulate()` is the entry point.
- `metrics`: per-priority latency, TTFT, queueing delay, percentiles, throughput.
- `report`: the comparison table and the paper's checks, as text.

The command line (`triage simulate`) and the plots live in `router/cli/`: this package does no I/O.

Time is simulated seconds only; a run is a pure function of its arguments and `--seed`.
"""
