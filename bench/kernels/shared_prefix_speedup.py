"""Shared-prefix (cascade) attention against the plain paged kernel on the same batch.

Issue 7's setting: batch 64 decoding requests sharing a 4k-token prefix, each with a 64-token
suffix of its own. The plain kernel reads the prefix KV once per request; shared-prefix
attention reads it once per group row tile. FlashInfer reports up to ~30x against vLLM's
PagedAttention for long shared prefixes at large batch.

    python bench/kernels/shared_prefix_speedup.py [--batch 64] [--prefix 4096] [--suffix 64]
"""

from __future__ import annotations

import argparse
import json

import torch
import triton

from gpu_batches import decode_batch, require_cuda

from triage_router.kernels.paged_attention import paged_attention
from triage_router.kernels.prefix_groups import describe_prefix_groups
from triage_router.kernels.shared_prefix_attention import shared_prefix_attention

MODELS = [("smollm2-135m", 9, 3, 64), ("llama3-8b", 32, 8, 128)]


def run(batch: int, prefix: int, suffix: int, block_size: int, dtype: torch.dtype) -> list[dict]:
    device = require_cuda()
    rows = []
    for name, q_heads, kv_heads, head_dim in MODELS:
        seq_len = prefix + suffix
        b = decode_batch(batch, seq_len, q_heads, kv_heads, head_dim, block_size, dtype, device, shared_prefix=prefix)
        groups = describe_prefix_groups(
            [(list(range(batch)), prefix)], list(range(batch + 1)), [seq_len] * batch, device,
            block_tables=b.block_tables.cpu(), block_size=block_size,
        )  # fmt: skip
        plain = lambda: paged_attention(  # noqa: E731
            b.q, b.k_cache, b.v_cache, b.block_tables, b.query_start_loc, b.seq_lens, max_query_len=1
        )
        cascade = lambda: shared_prefix_attention(  # noqa: E731
            b.q, b.k_cache, b.v_cache, b.block_tables, b.query_start_loc, b.seq_lens, groups, max_query_len=1
        )
        torch.testing.assert_close(cascade()[0].float(), plain()[0].float(), atol=2e-2, rtol=2e-2)
        plain_ms = triton.testing.do_bench(plain, warmup=50, rep=200, return_mode="median")
        cascade_ms = triton.testing.do_bench(cascade, warmup=50, rep=200, return_mode="median")
        rows.append({
            "model": name, "batch": batch, "prefix": prefix, "suffix": suffix,
            "dtype": str(dtype).removeprefix("torch."), "plain_us": round(plain_ms * 1e3, 1),
            "shared_prefix_us": round(cascade_ms * 1e3, 1), "speedup": round(plain_ms / cascade_ms, 2),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prefix", type=int, default=4096)
    parser.add_argument("--suffix", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="bfloat16")
    args = parser.parse_args()
    device = require_cuda()
    rows = run(args.batch, args.prefix, args.suffix, args.block_size, getattr(torch, args.dtype))
    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, triton {triton.__version__}")
    print("| model | batch | shared prefix + suffix | plain paged µs | shared-prefix µs | speedup |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["model"], r["batch"], f"{r['prefix']} + {r['suffix']}", r["plain_us"], r["shared_prefix_us"]]
        print("| " + " | ".join(str(c) for c in cells) + f" | {r['speedup']}x |")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
