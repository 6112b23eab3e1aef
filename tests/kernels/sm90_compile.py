"""Compile every kernel for an H100 (sm_90) without a GPU: Triton's bundled ptxas needs none.

The interpreter accepts code a GPU compiler rejects (``tl.dot`` below 16, reassigned
constexprs, ...), so this runs the real compiler over the configurations the wrappers pick,
up to cubin, and checks each fits the H100's shared memory without spilling registers. Run it directly or through
``test_sm90_compile.py``; it must run without ``TRITON_INTERPRET``.

    python -m tests.kernels.sm90_compile
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

H100 = GPUTarget("cuda", 90, 32)
H100_MAX_SHARED_BYTES = 232_448  # 227 KiB opt-in per block
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_variant(
    module: str, kernel: str, pointers: dict[str, str], constexprs: dict[str, Any], warps: int, stages: int
) -> tuple[int, dict[str, int]]:
    """Compile one specialisation like a real launch would; return (shared bytes, resource usage)."""
    fn = getattr(importlib.import_module(module), kernel).fn  # the autotuner wraps the JITFunction
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = "*" + pointers[name]
        elif name == "qk_scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    positions = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    # A real launch marks 16-aligned pointers and multiple-of-16 ints; without that the compiler
    # cannot prove vector alignment and never pipelines loads through cp.async.
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names) if aligned_16(name, signature)}
    src = ASTSource(fn=fn, signature=signature, constexprs=positions, attrs=aligned)
    compiled = triton.compile(src, target=H100, options={"num_warps": warps, "num_stages": stages})
    return int(compiled.metadata.shared), resource_usage(compiled.asm["cubin"])


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers per thread and local (spill) bytes, as cuobjdump reads them from the cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        dump = subprocess.run([str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True, check=True)
    text = dump.stdout
    fields = dict(re.findall(r"(REG|LOCAL):(\d+)", text))
    return {"registers": int(fields["REG"]), "spill_bytes": int(fields["LOCAL"])}


# Strides of rows that are whole head-dim vectors (head_dim is a multiple of 16), in every kernel.
ROW_STRIDES = {
    "stride_os", "stride_ot", "stride_oh", "stride_qt", "stride_qh", "stride_kb", "stride_kt", "stride_kh",
    "stride_vb", "stride_vt", "stride_vh", "stride_vs", "stride_kcb", "stride_kct", "stride_kch",
    "stride_vcb", "stride_vct", "stride_vch",
}  # fmt: skip


def aligned_16(name: str, signature: dict[str, str]) -> bool:
    return signature[name].startswith("*") or name in ROW_STRIDES


def attention_pointers(io: str, partial: str) -> dict[str, str]:
    return {
        "out_ptr": partial, "lse_ptr": "fp32", "q_ptr": io, "k_cache_ptr": io, "v_cache_ptr": io,
        "block_tables_ptr": "i32", "query_start_loc_ptr": "i32", "seq_lens_ptr": "i32",
        "kv_starts_ptr": "i32", "prefix_lens_ptr": "i32", "leaders_ptr": "i32",
        "query_rows_ptr": "i32", "query_positions_ptr": "i32", "row_starts_ptr": "i32",
    }  # fmt: skip


UNIT_STRIDES = {"stride_od": 1, "stride_qd": 1, "stride_kd": 1, "stride_vd": 1}


def variants() -> list[tuple[str, str, dict[str, str], dict[str, Any], int, int]]:
    paged = "triage_router.kernels.paged_attention", "_paged_attention_kernel"
    prefix = "triage_router.kernels.shared_prefix_attention", "_shared_prefix_kernel"
    out = []
    # (io dtype, partial dtype, head_dim, pad, group, BLOCK_M, block_size, precision, kv_starts)
    for io, part, d, pad, g, bm, bs, prec, starts in [
        ("fp16", "fp16", 64, 64, 3, 16, 16, "tf32", False),  # SmolLM2 decode
        ("bf16", "fp32", 128, 128, 8, 64, 32, "tf32", True),  # Llama-style prefill, split partials
        ("fp16", "fp16", 96, 128, 1, 64, 16, "tf32", False),  # padded head dim
        ("fp32", "fp32", 64, 64, 1, 16, 16, "ieee", True),
    ]:
        const = dict(UNIT_STRIDES, HEAD_DIM=d, HEAD_DIM_PAD=pad, GROUP=g, BLOCK_M=bm, BLOCK_Q=bm // g,
                     BLOCK_SIZE=bs, TILE_N=64, HAS_KV_STARTS=starts, DOT_PRECISION=prec)  # fmt: skip
        out.append((*paged, attention_pointers(io, part), const, 8 if bm > 16 else 4, 3))
    # A batch of one sequence: the launcher turns an argument equal to 1 into a constant.
    single = dict(out[0][3], num_seqs=1)
    out.append((*paged, out[0][2], single, 4, 3))
    for io, d, g, bm in [("fp16", 64, 3, 128), ("bf16", 128, 8, 128), ("fp16", 96, 1, 64)]:
        pad = triton.next_power_of_2(d)
        const = dict(UNIT_STRIDES, HEAD_DIM=d, HEAD_DIM_PAD=pad, GROUP=g, BLOCK_M=bm, BLOCK_Q=bm // g,
                     BLOCK_SIZE=16, TILE_N=64, DOT_PRECISION="tf32")  # fmt: skip
        out.append((*prefix, attention_pointers(io, "fp32"), const, 8, 3))
    merge_ptrs = {"out_ptr": "bf16", "out_lse_ptr": "fp32", "v_ptr": "fp32", "s_ptr": "fp32"}
    out.append(("triage_router.kernels.merge_states", "_merge_states_kernel", merge_ptrs,
                {"stride_vd": 1, "stride_od": 1, "BLOCK_H": 16, "BLOCK_D": 128}, 4, 1))  # fmt: skip
    write_ptrs = dict.fromkeys(["key_ptr", "value_ptr", "k_cache_ptr", "v_cache_ptr"], "bf16")
    write_ptrs["slot_mapping_ptr"] = "i64"
    out.append(("triage_router.kernels.kv_cache_write", "_kv_cache_write_kernel", write_ptrs,
                {"BLOCK_SIZE": 16, "BLOCK_H": 8, "BLOCK_D": 128}, 2, 1))  # fmt: skip
    return out


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("unset TRITON_INTERPRET: the interpreter replaces the compiler", file=sys.stderr)
        return 2
    failures = 0
    for module, kernel, pointers, constexprs, warps, stages in variants():
        label = f"{kernel} {pointers.get('q_ptr', pointers.get('v_ptr', ''))} " + " ".join(
            f"{k}={v}" for k, v in constexprs.items() if k.isupper()
        )
        try:
            shared, usage = compile_variant(module, kernel, pointers, constexprs, warps, stages)
        except Exception as exc:  # report every failing variant, not just the first
            print(f"FAIL {label}: {type(exc).__name__}: {exc}")
            failures += 1
            continue
        # Register spills are legal but turn a bandwidth-bound kernel into a local-memory-bound one.
        fits = shared <= H100_MAX_SHARED_BYTES and usage["spill_bytes"] == 0
        failures += not fits
        print(
            f"{'ok  ' if fits else 'FAIL'} {label} warps={warps} stages={stages} shared={shared}B "
            f"registers={usage['registers']} spilled={usage['spill_bytes']}B"
        )
    print(f"{len(variants()) - failures} of {len(variants())} variants compiled within limits")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
