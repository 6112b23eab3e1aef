"""Greedy decoding through the paged engine equals transformers' reference, token for token."""

from __future__ import annotations

import pytest
import torch

from triage_router.engine_server.sequence import SamplingParams
from tests.engine_server.conftest import reference_greedy, save_tiny_checkpoint, tiny_engine

PROMPTS = [[5, 17, 33, 9, 60, 2, 41], [7] * 23, list(range(3, 50)), [11, 12]]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"kind": "qwen2"},
        {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 32}, "rope_theta": 500000.0},
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}},
        {"num_key_value_heads": 4, "tie_word_embeddings": True},
    ],
    ids=["llama-gqa", "qwen2-bias", "llama3-rope", "linear-rope", "yarn-rope", "mha-tied"],
)
def test_greedy_matches_transformers(tmp_path, variant):
    from transformers import AutoModelForCausalLM

    path = save_tiny_checkpoint(tmp_path, **dict(variant))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = tiny_engine(path, block_size=4, num_gpu_blocks=64, num_swap_blocks=0)
    prompt = PROMPTS[0]
    assert engine.generate([prompt], greedy(12))[0] == reference_greedy(hf, prompt, 12)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks


def test_concurrent_sequences_of_different_lengths_with_chunked_prefill(tiny_llama, tiny_hf):
    # A 16-token budget splits the 47-token prompt into chunks that share steps with decodes.
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=128, max_num_batched_tokens=16)
    outs = engine.generate(PROMPTS, [greedy(n) for n in (10, 14, 6, 20)])
    for prompt, out, n in zip(PROMPTS, outs, (10, 14, 6, 20)):
        assert out == reference_greedy(tiny_hf, prompt, n)
    assert engine.kv.pool.num_free == engine.kv.pool.num_blocks


def test_logprobs_match_reference_distribution(tiny_llama, tiny_hf):
    engine = tiny_engine(tiny_llama, block_size=4, num_gpu_blocks=32)
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True, logprobs=True, top_logprobs=3)
    seq = engine.add_request("r", PROMPTS[1], params)
    while engine.has_work():
        engine.step()
    with torch.no_grad():
        ref = torch.log_softmax(tiny_hf(torch.tensor([PROMPTS[1]])).logits[0, -1], dim=-1)
    first = seq.logprobs[0]
    assert first.token_id == int(ref.argmax())
    assert first.logprob == pytest.approx(float(ref.max()), abs=1e-4)
    top_ids = [t for t, _ in first.top]
    assert top_ids == ref.topk(3).indices.tolist()
    assert len(seq.logprobs) == 3
