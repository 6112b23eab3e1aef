"""Sentence embeddings beside the LM: all-MiniLM-L6-v2 by default, mean-pooled, batched.

Concurrent requests are coalesced: whatever arrived while the previous batch ran goes into
the next forward pass together.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from triage_router.engine_server.checkpoint import DEFAULT_EMBEDDING, ModelLoadError, package_file


@dataclass
class Embeddings:
    vectors: list[list[float]]
    token_counts: list[int]  # per text, after truncation

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


class SentenceEmbedder:
    def __init__(
        self, path: Path, device: str = "cpu", max_length: int | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not an embedding model directory (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device = device
        st_config = path / "sentence_bert_config.json"
        if max_length is None and st_config.exists():
            max_length = json.loads(st_config.read_text()).get("max_seq_length")
        self.max_length = max_length or 512
        modules = path / "modules.json"
        # sentence-transformers checkpoints declare whether the pipeline ends with Normalize.
        self.normalize = modules.exists() and "Normalize" in modules.read_text()

    @classmethod
    def load(cls, name: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> SentenceEmbedder:
        path = package_file(*DEFAULT_EMBEDDING) if name == "default" else Path(name).expanduser()
        return cls(path, device, dtype=dtype)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> Embeddings:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state.float()  # pool in fp32 whatever the weights
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return Embeddings(pooled.cpu().tolist(), batch["attention_mask"].sum(1).tolist())


class EmbeddingBatcher:
    """Coalesces concurrent embedding requests into one forward pass per batch."""

    def __init__(self, embedder: SentenceEmbedder, max_batch: int = 128) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self._pending: list[tuple[list[str], asyncio.Future[Embeddings]]] = []
        self._running = False
        self.num_batches = 0

    async def embed(self, texts: list[str]) -> Embeddings:
        fut: asyncio.Future[Embeddings] = asyncio.get_running_loop().create_future()
        self._pending.append((texts, fut))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[list[str], asyncio.Future[Embeddings]]] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                    item = self._pending.pop(0)
                    batch.append(item)
                    size += len(item[0])
                texts = [t for item, _ in batch for t in item]
                try:
                    result = await asyncio.to_thread(self.embedder.embed, texts)
                except Exception as e:  # fail this batch only
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                self.num_batches += 1
                offset = 0
                for item, fut in batch:
                    end = offset + len(item)
                    if not fut.done():
                        fut.set_result(Embeddings(result.vectors[offset:end], result.token_counts[offset:end]))
                    offset = end
        finally:
            self._running = False
