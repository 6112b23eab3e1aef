"""The real SmolLM2-135M-Instruct, fp32 on the CPU, against transformers on the same weights."""

from __future__ import annotations

import pytest

from engine_server.sequence import SamplingParams
from tests.engine_server.conftest import reference_greedy

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
    outs = run(smollm2_engine, prompts, 12, ignore_eos=True)
    for prompt, out in zip(prompts, outs):
        assert out == reference_greedy(smollm2_hf, prompt, 12)
    assert smollm2_engine.kv.pool.num_free == smollm2_engine.kv.pool.num_blocks
