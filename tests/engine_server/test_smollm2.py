"""The real SmolLM2-135M-Instruct, fp32 on the CPU, against transformers on the same weights."""

from __future__ import annotations

import pytest

from triage_router.engine_server.sequence import SamplingParams
from triage_router.policies.cost_model import CostModel
from triage_router.policies.preemption import PreemptionMode

from tests.engine_server.conftest import reference_generate

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write a haiku about the sea.",
]


def chat_ids(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]


def run(engine, prompts: list[list[int]], n: int, **kw) -> list[list[int]]:
    return engine.generate(prompts, [SamplingParams(temperature=0.0, max_tokens=n, **kw) for _ in prompts])


def test_paris(smollm2_engine):
    ids = chat_ids(smollm2_engine.tokenizer, QUESTIONS[0])
    out = run(smollm2_engine, [ids], 20)[0]
    assert smollm2_engine.tokenizer.decode(out, skip_special_tokens=True) == "The capital of France is Paris."


def test_concurrent_prompts_match_transformers(smollm2_engine, smollm2_hf):
    prompts = [chat_ids(smollm2_engine.tokenizer, q) for q in QUESTIONS]
    outs = run(smollm2_engine, prompts, 8, ignore_eos=True)
    for prompt, out in zip(prompts, outs):
        assert out == reference_generate(smollm2_hf, prompt, 8)
    assert smollm2_engine.kv.pool.num_free == smollm2_engine.kv.pool.num_blocks


def test_prefix_cache_hit_gives_the_same_answer(smollm2_engine):
    ids = chat_ids(smollm2_engine.tokenizer, QUESTIONS[1])
    first = run(smollm2_engine, [ids], 8)[0]
    seq = smollm2_engine.add_request("again", ids, SamplingParams(temperature=0.0, max_tokens=8))
    while smollm2_engine.has_work():
        smollm2_engine.step()
    assert seq.num_cached_tokens == (len(ids) - 1) // 16 * 16 > 0
    assert seq.output_token_ids == first


@pytest.mark.parametrize(
    ("swap_s_per_token", "mode"), [(1e-9, PreemptionMode.SWAP), (1.0, PreemptionMode.RECOMPUTE)], ids=["swap", "recompute"]
)
def test_preempted_and_resumed(smollm2_engine, smollm2_hf, monkeypatch, swap_s_per_token, mode):
    sched = smollm2_engine.scheduler
    # One running slot, and a cost model that makes policies pick the mode under test.
    monkeypatch.setattr(sched, "max_num_seqs", 1)
    monkeypatch.setattr(sched, "cost", CostModel(dc1=1e-7, dc2=1e-3, pc1=1e-7, pc2=1e-3, swap_s_per_token=swap_s_per_token))
    before = dict(sched.num_preemptions)
    bulk_ids = chat_ids(smollm2_engine.tokenizer, QUESTIONS[2])
    bulk = smollm2_engine.add_request("bulk", bulk_ids, SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True), priority=4)
    for _ in range(3):  # prefill, then two decodes
        smollm2_engine.step()
    urgent = smollm2_engine.add_request("urgent", chat_ids(smollm2_engine.tokenizer, QUESTIONS[0]),
                                        SamplingParams(temperature=0.0, max_tokens=8), priority=0)
    while smollm2_engine.has_work():
        smollm2_engine.step()
    assert bulk.num_preemptions == 1 and sched.num_preemptions[mode] == before[mode] + 1
    assert smollm2_engine.tokenizer.decode(urgent.output_token_ids, skip_special_tokens=True) == "The capital of France is Paris."
    assert bulk.output_token_ids == reference_generate(smollm2_hf, bulk_ids, 6)
    assert smollm2_engine.kv.pool.num_free == smollm2_engine.kv.pool.num_blocks
