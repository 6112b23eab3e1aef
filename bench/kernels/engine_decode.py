"""End to end on the GPU: our engine's decode throughput for SmolLM2 against transformers'
`generate` with SDPA, same GPU, same prompts, same batch, in one run.

Both generate exactly T tokens per sequence (ours: ignore_eos; transformers: min_new_tokens)
from B distinct P-token prompts, greedy, bf16. Ours runs in-process (no HTTP), with the
kernels/ Triton attention the engine picks on CUDA; the time is from the first step to the last
token, prefill included, as for `generate`.

    python bench/kernels/engine_decode.py --batch 64 --tokens 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from gpu_batches import require_cuda  # noqa: E402

from triage_router.engine_server.checkpoint import resolve_model_dir  # noqa: E402
from triage_router.engine_server.config import EngineConfig  # noqa: E402
from triage_router.engine_server.engine import LLMEngine  # noqa: E402
from triage_router.engine_server.sequence import SamplingParams  # noqa: E402


def prompts(batch: int, length: int) -> list[list[int]]:
    # Distinct prompts: prefix caching shares nothing, every sequence decodes on its own.
    return [[100 + (7 * i + j) % 30000 for j in range(length)] for i in range(batch)]


def ours(ids: list[list[int]], tokens: int) -> float:
    engine = LLMEngine.from_config(EngineConfig(model="default", dtype="bfloat16", device="cuda", embedding_model=None))
    engine.generate(ids[:2], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))  # warm up the kernels
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = engine.generate(ids, SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True))
    torch.cuda.synchronize()
    assert all(len(o) == tokens for o in out)
    return len(ids) * tokens / (time.perf_counter() - start)


def transformers_sdpa(ids: list[list[int]], tokens: int) -> float:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_dir("default"), dtype=torch.bfloat16, attn_implementation="sdpa"
    ).to("cuda").eval()
    batch = torch.tensor(ids, device="cuda")  # equal lengths: no padding needed
    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(batch[:2], generation_config=GenerationConfig(max_new_tokens=4, do_sample=False, pad_token_id=0))
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(batch, generation_config=config)
        torch.cuda.synchronize()
    return (out.shape[1] - batch.shape[1]) * out.shape[0] / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--tokens", type=int, default=256)
    args = p.parse_args()
    require_cuda()
    ids = prompts(args.batch, args.prompt_len)
    result = {"gpu": torch.cuda.get_device_name(), **vars(args),
              "ours_tok_s": ours(ids, args.tokens), "transformers_sdpa_tok_s": transformers_sdpa(ids, args.tokens)}
    result["ratio"] = result["ours_tok_s"] / result["transformers_sdpa_tok_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
