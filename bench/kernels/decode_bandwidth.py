"""Decode attention: achieved HBM bandwidth of our kernels against the H100's copy bandwidth.

Target (issue 7): >= 70% of the H100's measured ~3.0 TB/s copy bandwidth at batch 64 with
2k-token contexts. Compared with torch's scaled_dot_product_attention over the same KV laid
out contiguously (no paging). Bytes counted: K and V of every context token once, plus q and out.

    python bench/kernels/decode_bandwidth.py [--batch 64] [--seq-len 2048] [--copy-tbps 3.0]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
import triton

from gpu_batches import contiguous_kv, decode_batch, require_cuda

from triage_router.kernels.paged_attention import paged_attention
from triage_router.kernels.attention_reference import paged_attention_reference
from triage_router.kernels.split_kv_decode import split_kv_decode

# (name, q heads, kv heads, head dim): SmolLM2-135M (the model we serve) and a Llama-3-8B layer.
MODELS = [("smollm2-135m", 9, 3, 64), ("llama3-8b", 32, 8, 128)]


def measure_copy_tbps(device: torch.device) -> float:
    """Device-to-device copy bandwidth (read + write) of a 1 GiB buffer, the roofline we compare to."""
    src = torch.empty(1 << 29, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e12


def run(batch: int, seq_len: int, block_size: int, dtype: torch.dtype, copy_tbps: float) -> list[dict]:
    device = require_cuda()
    rows = []
    for name, q_heads, kv_heads, head_dim in MODELS:
        b = decode_batch(batch, seq_len, q_heads, kv_heads, head_dim, block_size, dtype, device)
        k, v = contiguous_kv(b)
        q4 = b.q.unsqueeze(2)  # [batch, q_heads, 1, dim]

        ours = lambda: paged_attention(  # noqa: E731
            b.q, b.k_cache, b.v_cache, b.block_tables, b.query_start_loc, b.seq_lens, max_query_len=1
        )
        split = lambda: split_kv_decode(  # noqa: E731
            b.q, b.k_cache, b.v_cache, b.block_tables, b.seq_lens, max_seq_len=seq_len
        )
        sdpa = lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=kv_heads != q_heads)  # noqa: E731

        # Check before timing: all three agree with the fp32 reference on this batch.
        ref, _ = paged_attention_reference(
            b.q[:4], b.k_cache, b.v_cache, b.block_tables[:4], b.query_start_loc[:5], b.seq_lens[:4]
        )
        for label, fn in [("paged", ours), ("split", split)]:
            torch.testing.assert_close(fn()[0][:4].float(), ref.float(), atol=2e-2, rtol=2e-2, msg=label)
        torch.testing.assert_close(sdpa()[:4, :, 0].float(), ref.float(), atol=2e-2, rtol=2e-2)

        kv_bytes = 2 * batch * seq_len * kv_heads * head_dim * b.k_cache.element_size()
        io_bytes = 2 * b.q.numel() * b.q.element_size()
        for label, fn in [("paged_attention", ours), ("split_kv_decode", split), ("torch sdpa (contiguous)", sdpa)]:
            ms = triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")
            tbps = (kv_bytes + io_bytes) / (ms * 1e-3) / 1e12
            rows.append({
                "model": name, "kernel": label, "batch": batch, "seq_len": seq_len,
                "dtype": str(dtype).removeprefix("torch."), "us": round(ms * 1e3, 1),
                "tb_per_s": round(tbps, 3), "pct_of_copy": round(100 * tbps / copy_tbps, 1),
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default="bfloat16")
    parser.add_argument("--copy-tbps", type=float, default=None, help="roofline; measured on this GPU when omitted")
    args = parser.parse_args()
    device = require_cuda()
    copy_tbps = args.copy_tbps or measure_copy_tbps(device)
    rows = run(args.batch, args.seq_len, args.block_size, getattr(torch, args.dtype), copy_tbps)
    print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, triton {triton.__version__}, "
          f"copy bandwidth {copy_tbps:.2f} TB/s")  # fmt: skip
    print("| model | kernel | batch x context | µs | TB/s | % of copy bandwidth |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["model"], r["kernel"], f"{r['batch']} x {r['seq_len']}", r["us"], r["tb_per_s"], r["pct_of_copy"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(json.dumps({"copy_tbps": copy_tbps, "rows": rows}))


if __name__ == "__main__":
    main()
