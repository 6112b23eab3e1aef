"""The engine's CUDA path (kernels/ Triton attention, torch GEMMs) against its CPU path: the
same greedy tokens for the same model, in fp32 (the kernels use IEEE fp32 dots there).
Runs wherever a GPU is present; bench/kernels/run.sh runs it on one."""

from __future__ import annotations

import pytest
import torch

from triage_router.engine_server.config import EngineConfig
from triage_router.engine_server.engine import LLMEngine
from triage_router.engine_server.sequence import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Name three prime numbers."]


def greedy(device: str) -> list[list[int]]:
    engine = LLMEngine.from_config(
        EngineConfig(model="default", dtype="float32", device=device, embedding_model=None, num_gpu_blocks=256)
    )
    ids = [
        engine.tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"]
        for q in QUESTIONS
    ]
    return engine.generate(ids, SamplingParams(temperature=0.0, max_tokens=32))


def test_cuda_and_cpu_paths_produce_the_same_greedy_tokens():
    assert greedy("cuda") == greedy("cpu")
