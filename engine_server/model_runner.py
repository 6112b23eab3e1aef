"""Turns one scheduled step into tensors, runs the model, and samples.

The batch is flattened: single-token entries (decodes) first, then prefill chunks. Only the
rows whose chunk reaches the end of their sequence get logits and a sampled token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from triage_router.engine_server.attention import AttentionBackend, AttentionMetadata, PrefillChunk
from triage_router.engine_server.kv_cache import KVCacheManager
from triage_router.engine_server.model import LlamaForCausalLM
from triage_router.engine_server.scheduled import ScheduledSeq
from triage_router.engine_server.sampling import greedy_tokens, sample
from triage_router.engine_server.sequence import Sequence, TokenLogprob


@dataclass
class SampledToken:
    seq: Sequence
    token_id: int
    logprob: TokenLogprob | None


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, kv: KVCacheManager, backend: AttentionBackend, device: torch.device) -> None:
        self.model = model
        self.kv = kv
        self.backend = backend
        self.device = device
        self.block_size = kv.block_size
        self.dtype = kv.kv_caches[0].dtype
        self.prepare_s = 0.0  # building input tensors: the runner's own CPU overhead
        self.forward_s = 0.0  # the model's forward pass and logits

    @torch.inference_mode()
    def execute(self, batch: list[ScheduledSeq]) -> list[SampledToken]:
        if not batch:
            return []
        t0 = time.perf_counter()
        decodes = [b for b in batch if b.num_tokens == 1]
        prefills = [b for b in batch if b.num_tokens > 1]
        ordered = decodes + prefills
        ids, positions, slots, sample_rows = self._flatten(ordered)
        meta = AttentionMetadata(slot_mapping=torch.tensor(slots, device=self.device), num_decodes=len(decodes))
        if self.backend.packed:
            self._pack(meta, ordered)
        else:
            self._decode_metadata(meta, decodes)
            self._prefill_metadata(meta, prefills, offset=len(decodes))

        t1 = time.perf_counter()
        dev = self.device
        hidden = self.model(torch.tensor(ids, device=dev), torch.tensor(positions, device=dev), self.kv.kv_caches, meta, self.backend)
        sample_seqs = [ordered[i].seq for i, _ in sample_rows]
        # All greedy, no logprobs: an argmax on the model-dtype logits, no fp32 copy of them.
        # (CPU only: a GPU's max may break ties differently from the first index.)
        argmax_only = dev.type == "cpu" and all(s.params.greedy and not s.params.logprobs for s in sample_seqs)
        logits = None
        if sample_rows:
            rows = torch.tensor([row for _, row in sample_rows], device=dev)
            logits = self.model.compute_logits(hidden[rows], fp32=not argmax_only).cpu()
        self.prepare_s += t1 - t0
        self.forward_s += time.perf_counter() - t1
        if logits is None:
            return []
        if argmax_only:
            return [SampledToken(s, t, None) for s, t in zip(sample_seqs, greedy_tokens(logits))]
        tokens, logprobs = sample(logits, sample_seqs)
        return [SampledToken(s, t, lp) for s, t, lp in zip(sample_seqs, tokens, logprobs)]

    def _flatten(self, ordered: list[ScheduledSeq]) -> tuple[list[int], list[int], list[int], list[tuple[int, int]]]:
        """Token ids, positions and cache slots of the step, and (entry, row) of each row whose
        chunk completes its sequence: those get logits and a sampled token."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[tuple[int, int]] = []
        for i, b in enumerate(ordered):
            s, c, n = b.seq, b.seq.num_computed_tokens, b.num_tokens
            table = s.block_table
            ids.extend(s.token_ids[c:c + n])
            positions.extend(range(c, c + n))
            slots.extend(table[p // bs].block_id * bs + p % bs for p in range(c, c + n))
            if c + n == len(s.token_ids):
                sample_rows.append((i, len(ids) - 1))
        return ids, positions, slots, sample_rows

    def _decode_metadata(self, meta: AttentionMetadata, decodes: list[ScheduledSeq]) -> None:
        if not decodes:
            return
        bs = self.block_size
        ctx = [b.seq.num_computed_tokens + 1 for b in decodes]
        width = -(-max(ctx) // bs)
        tables = torch.zeros(len(decodes), width, dtype=torch.long)
        for i, b in enumerate(decodes):
            row = [blk.block_id for blk in b.seq.block_table[: -(-ctx[i] // bs)]]
            tables[i, : len(row)] = torch.tensor(row)
        allowed = torch.arange(width * bs).unsqueeze(0) < torch.tensor(ctx).unsqueeze(1)
        meta.decode_block_tables = tables.to(self.device)
        meta.decode_context_lens = torch.tensor(ctx, dtype=tables.dtype).to(self.device)
        meta.decode_mask = _additive(allowed.view(len(decodes), 1, 1, width * bs), self.dtype).to(self.device)

    def _prefill_metadata(self, meta: AttentionMetadata, prefills: list[ScheduledSeq], offset: int) -> None:
        bs, dev = self.block_size, self.device
        for b in prefills:
            c, n = b.seq.num_computed_tokens, b.num_tokens
            table = torch.tensor([blk.block_id for blk in b.seq.block_table[: -(-(c + n) // bs)]], device=dev)
            mask = None
            if c:
                allowed = torch.arange(c + n).unsqueeze(0) <= (c + torch.arange(n)).unsqueeze(1)
                mask = _additive(allowed, self.dtype).to(dev)
            meta.prefills.append(PrefillChunk(start=offset, length=n, context_len=c, block_table=table, mask=mask))
            offset += n

    def _pack(self, meta: AttentionMetadata, ordered: list[ScheduledSeq]) -> None:
        bs, dev = self.block_size, self.device
        lens = [b.seq.num_computed_tokens + b.num_tokens for b in ordered]
        width = max(-(-n // bs) for n in lens)
        tables = torch.zeros(len(ordered), width, dtype=torch.int32)
        for i, (b, n) in enumerate(zip(ordered, lens)):
            row = [blk.block_id for blk in b.seq.block_table[: -(-n // bs)]]
            tables[i, : len(row)] = torch.tensor(row, dtype=torch.int32)
        starts = [0]
        for b in ordered:
            starts.append(starts[-1] + b.num_tokens)
        meta.block_tables = tables.to(dev)
        meta.query_start_loc = torch.tensor(starts, dtype=torch.int32, device=dev)
        meta.seq_lens = torch.tensor(lens, dtype=torch.int32, device=dev)
        meta.max_query_len = max(b.num_tokens for b in ordered)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as 0 / -inf in the model dtype: built once per step, where SDPA would
    otherwise convert the boolean mask again in every layer."""
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf"))
