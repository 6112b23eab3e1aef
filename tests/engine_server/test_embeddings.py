from __future__ import annotations

import asyncio
import math

import pytest
from litestar.testing import TestClient

from triage_router.engine_server.embeddings import EmbeddingBatcher, SentenceEmbedder
from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.http.app import create_app


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder.load("default")


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_mean_pooled_normalised_vectors(embedder):
    out = embedder.embed(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell sharply."])
    assert len(out.vectors) == 3 and len(out.vectors[0]) == 384
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in out.vectors)
    assert cosine(out.vectors[0], out.vectors[1]) > cosine(out.vectors[0], out.vectors[2]) + 0.3
    # Padding must not change a text's vector: alone or in a batch, the same embedding.
    alone = embedder.embed(["A cat sits on the mat."]).vectors[0]
    assert cosine(alone, out.vectors[0]) > 0.9999


def test_bf16_weights_give_the_same_directions(embedder):
    import torch

    texts = ["My chest hurts and my arm is numb", "Summarise these 400 support tickets", "fix my regex please"]
    half = SentenceEmbedder.load("default", dtype=torch.bfloat16)
    for a, b in zip(embedder.embed(texts).vectors, half.embed(texts).vectors):
        assert cosine(a, b) > 0.999
        assert abs(math.sqrt(sum(x * x for x in b)) - 1) < 1e-4  # pooled and normalised in fp32


def test_concurrent_requests_share_one_batch(embedder):
    batcher = EmbeddingBatcher(embedder)

    async def both():
        return await asyncio.gather(batcher.embed(["one"]), batcher.embed(["two", "three"]))

    first, second = asyncio.run(both())
    assert batcher.num_batches == 1
    assert len(first.vectors) == 1 and len(second.vectors) == 2
    assert first.prompt_tokens == 3 and second.prompt_tokens == 6  # [CLS] word [SEP] each


def test_embeddings_endpoint(embedder, smollm2_engine):
    app = create_app(EngineClient.in_thread(smollm2_engine), model_name="m", embedder=EmbeddingBatcher(embedder))
    with TestClient(app) as client:
        r = client.post("/v1/embeddings", json={"input": ["hello", "world"], "model": "all-MiniLM-L6-v2"})
        body = r.json()
        assert r.status_code == 200 and body["object"] == "list"
        assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["prompt_tokens"] == 6
        assert client.post("/v1/embeddings", json={"input": []}).status_code == 400
        assert client.post("/v1/embeddings", json={"input": "x", "model": "nope"}).status_code == 404
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["m", "all-MiniLM-L6-v2"]
