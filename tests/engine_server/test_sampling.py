from __future__ import annotations

import torch

from triage_router.engine_server.sampling import sample
from triage_router.engine_server.sequence import SamplingParams, Sequence


def seqs(*params: SamplingParams) -> list[Sequence]:
    return [Sequence(f"s{i}", [1], p) for i, p in enumerate(params)]


LOGITS = torch.tensor([[0.1, 2.0, 1.9, -1.0, 0.5], [3.0, 0.0, 2.9, 0.1, 0.2]])


def test_greedy_rows_take_the_argmax_even_beside_sampled_rows():
    tokens, _ = sample(LOGITS, seqs(SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=1)))
    assert tokens[0] == 1


def test_top_k_1_and_tiny_top_p_are_greedy():
    for p in (SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.5, top_p=1e-6)):
        for _ in range(20):
            tokens, _ = sample(LOGITS, seqs(p, p))
            assert tokens == [1, 0]


def test_top_k_never_samples_outside_the_k_best():
    p = SamplingParams(temperature=2.0, top_k=2)
    seen = set()
    for _ in range(200):
        tokens, _ = sample(LOGITS[:1], seqs(p))
        seen.add(tokens[0])
    assert seen == {1, 2}


def test_seed_makes_a_row_reproducible_whatever_its_neighbours():
    flat = torch.zeros(1, 5)  # uniform: every draw is up to the noise
    alone = Sequence("a", [1], SamplingParams(seed=5))
    draws_alone = [sample(flat, [alone])[0][0] for _ in range(30)]
    batched = Sequence("b", [1], SamplingParams(seed=5))
    neighbour = Sequence("c", [1], SamplingParams())
    draws_batched = [sample(flat.repeat(2, 1), [batched, neighbour])[0][0] for _ in range(30)]
    assert draws_alone == draws_batched and len(set(draws_alone)) > 1
    other = Sequence("d", [1], SamplingParams(seed=6))
    assert [sample(flat, [other])[0][0] for _ in range(30)] != draws_alone


def test_logprobs_are_of_the_raw_distribution():
    p = SamplingParams(temperature=0.0, logprobs=True, top_logprobs=2)
    _, lps = sample(LOGITS, seqs(p, SamplingParams(temperature=0.0)))
    ref = torch.log_softmax(LOGITS[0], -1)
    assert lps[1] is None
    assert lps[0].token_id == 1 and abs(lps[0].logprob - float(ref[1])) < 1e-6
    assert [t for t, _ in lps[0].top] == [1, 2]
