"""The attention seam: the torch backend agrees with kernels/' reference semantics, and the
Triton backend drives the whole engine (under Triton's CPU interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from triage_router.engine_server.attention import TorchPagedAttention
from triage_router.engine_server.block_pool import Block
from triage_router.engine_server.model_runner import ModelRunner
from triage_router.engine_server.scheduled import ScheduledSeq
from triage_router.engine_server.sequence import SamplingParams, Sequence

ROOT = Path(__file__).resolve().parents[2]




def test_torch_backend_matches_the_kernels_reference():
    from triage_router.kernels.attention_reference import paged_attention_reference

    torch.manual_seed(0)
    block_size, kv_heads, heads, dim, num_blocks = 4, 2, 6, 8, 32
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, dim)
    # Three sequences: a decode (context 9), a chunk after a cached prefix (5 + 6), a fresh prefill (7).
    layout = [(9, 1), (5, 6), (0, 7)]
    tables = [[3, 7, 1], [10, 4, 12], [20, 21]]
    seqs, batch = [], []
    for i, ((ctx, n), table) in enumerate(zip(layout, tables)):
        seq = Sequence(f"s{i}", list(range(ctx + n)), SamplingParams())
        seq.block_table = [Block(b) for b in table]
        seq.num_computed_tokens = ctx
        seqs.append(seq)
        batch.append(ScheduledSeq(seq, n))

    captured = {}

    class Capture(TorchPagedAttention):
        def forward(self, q, k, v, kv_cache, meta):
            captured["meta"] = meta
            return super().forward(q, k, v, kv_cache, meta)

    class OneLayer(torch.nn.Module):
        def forward(self, ids, positions, caches, meta, backend):
            captured["q"] = q = torch.randn(ids.shape[0], heads, dim)
            captured["k"] = k = torch.randn(ids.shape[0], kv_heads, dim)
            v = torch.randn(ids.shape[0], kv_heads, dim)
            captured["out"] = backend.forward(q, k, v, caches[0], meta)
            return torch.zeros(ids.shape[0], 1)

        def compute_logits(self, hidden, fp32=True):
            return torch.zeros(hidden.shape[0], 4)

    class KV:  # the two attributes ModelRunner reads
        kv_caches = [kv_cache]

    KV.block_size = block_size  # type: ignore[attr-defined]
    runner = ModelRunner(OneLayer(), KV(), Capture(), torch.device("cpu"))  # type: ignore[arg-type]
    runner.execute(batch)

    meta, q, out = captured["meta"], captured["q"], captured["out"]
    # The same step in the kernels' packed form (decodes first, as the runner orders them).
    ordered = [batch[0], batch[1], batch[2]]
    lens = [b.seq.num_computed_tokens + b.num_tokens for b in ordered]
    width = max(len(t) for t in tables)
    block_tables = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    starts = torch.tensor([0, 1, 7, 14], dtype=torch.int32)
    ref, _ = paged_attention_reference(
        q, kv_cache[0], kv_cache[1], block_tables, starts, torch.tensor(lens, dtype=torch.int32)
    )
    assert meta.num_decodes == 1
    torch.testing.assert_close(out, ref.to(out.dtype), atol=1e-5, rtol=1e-5)


def test_triton_backend_generates_the_reference_tokens(tiny_llama, tiny_hf):
    from tests.engine_server.conftest import reference_greedy

    prompts = [[5, 17, 33, 9, 60, 2, 41], list(range(3, 30))]
    expected = [reference_greedy(tiny_hf, p, 4) for p in prompts]
    script = f"""
import torch
from triage_router.engine_server.sequence import SamplingParams
from tests.engine_server.conftest import tiny_engine
from pathlib import Path
engine = tiny_engine(Path({str(tiny_llama)!r}), block_size=16, num_gpu_blocks=16, attention_backend="triton",
                     max_num_batched_tokens=16)
outs = engine.generate({prompts!r}, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
print(outs)
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == repr(expected)
