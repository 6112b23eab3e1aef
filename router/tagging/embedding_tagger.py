"""EmbeddingClassifier: nearest centroid over embeddings of labelled example prompts.

At start-up the examples (JSONL lines `{"text": ..., "priority": 0..4}`; Triage ships
router/tagging/data/priority_examples.jsonl) are embedded through an OpenAI-compatible `/v1/embeddings`
endpoint, and each level's centroid is the normalised mean of its examples' unit vectors. A
request's level is the centroid with the highest cosine similarity. The router imports no
model code: our engine serves all-MiniLM-L6-v2 there, and any embeddings service will do.

Requests that arrive together are embedded in one call (`EmbeddingBatcher`), which is what
keeps the per-request cost low under load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import httpx

from triage_router.policies.request import LEAST_URGENT, MOST_URGENT
from triage_router.router.config import EmbeddingTaggerConfig
from triage_router.router.tagging.model_tagger import NotReady, RejectedAnswer

log = logging.getLogger("triage.tagging")

Vector = list[float]
LEVELS = range(MOST_URGENT, LEAST_URGENT + 1)


def shipped_examples() -> str:
    # Beside this module rather than through importlib.resources, which cannot read a namespace
    # package's data under Python 3.11's editable installs.
    return (Path(__file__).parent / "data" / "priority_examples.jsonl").read_text("utf-8")


def parse_examples(text: str, origin: str) -> list[tuple[str, int]]:
    """(text, level) pairs; a bad line is an error naming the file and line."""
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            record = json.loads(line)
            example, level = record["text"], record["priority"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{origin}:{number}: expected {{\"text\": ..., \"priority\": 0..4}}: {error}") from None
        if not isinstance(example, str) or not example.strip() or level not in LEVELS or isinstance(level, bool):
            raise ValueError(f"{origin}:{number}: expected a non-empty text and a priority from 0 to 4")
        examples.append((example, level))
    return examples


def load_examples(paths: Sequence[str]) -> list[tuple[str, int]]:
    if not paths:
        return parse_examples(shipped_examples(), "router/tagging/data/priority_examples.jsonl")
    examples = []
    for path in paths:
        examples.extend(parse_examples(Path(path).read_text("utf-8"), path))
    return examples


def unit(vector: Sequence[float]) -> Vector:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0:
        raise RejectedAnswer("the embeddings service returned a zero vector")
    return [x / norm for x in vector]


def centroids(vectors: Sequence[Vector], levels: Sequence[int]) -> dict[int, Vector]:
    """Per level, the normalised mean of its examples' unit vectors."""
    sums: dict[int, Vector] = {}
    for vector, level in zip(vectors, levels, strict=True):
        v = unit(vector)
        total = sums.setdefault(level, [0.0] * len(v))
        for i, x in enumerate(v):
            total[i] += x
    return {level: unit(total) for level, total in sums.items()}


class EmbeddingsClient:
    """POST /v1/embeddings on an OpenAI-compatible service."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, model: str, api_key: str) -> None:
        self.http = http
        self.url = f"{base_url}/v1/embeddings"
        self.model = model
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}

    async def embed(self, texts: list[str]) -> list[Vector]:
        response = await self.http.post(self.url, json={"model": self.model, "input": texts}, headers=self.headers)
        response.raise_for_status()
        data = response.json()["data"]
        if len(data) != len(texts):
            raise RejectedAnswer(f"asked for {len(texts)} embeddings, got {len(data)}")
        return [item["embedding"] for item in sorted(data, key=lambda item: item["index"])]


class EmbeddingBatcher:
    """Texts asked for in the same turn of the event loop share one embeddings call."""

    def __init__(self, client: EmbeddingsClient, max_batch: int) -> None:
        self.client = client
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[Vector]]] = []

    async def embed(self, text: str) -> Vector:
        future: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((text, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.max_batch):
            asyncio.ensure_future(self._send(pending[start : start + self.max_batch]))

    async def _send(self, batch: list[tuple[str, asyncio.Future[Vector]]]) -> None:
        live = [(text, future) for text, future in batch if not future.done()]
        if not live:
            return
        try:
            vectors = await self.client.embed([text for text, _ in live])
        except Exception as error:  # noqa: BLE001 - handed to every waiting caller
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), vector in zip(live, vectors, strict=True):
            if not future.done():
                future.set_result(vector)


class EmbeddingClassifier:
    name = "embedding"

    def __init__(self, client: EmbeddingsClient, config: EmbeddingTaggerConfig) -> None:
        self.client = client
        self.batcher = EmbeddingBatcher(client, config.batch_size)
        self.examples = load_examples(config.examples)
        self.batch_size = config.batch_size
        self.min_margin = config.min_margin
        self.centroids: dict[int, Vector] = {}
        self._warmup: asyncio.Task[None] | None = None
        # First retry delay while the embeddings service is not up; doubles to 30 s.
        self.retry_delay_s = 0.5

    @property
    def ready(self) -> bool:
        return bool(self.centroids)

    async def fit(self) -> None:
        """Embed the examples and compute the centroids."""
        texts = [text for text, _ in self.examples]
        vectors: list[Vector] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self.client.embed(texts[start : start + self.batch_size]))
        self.centroids = centroids(vectors, [level for _, level in self.examples])

    async def start(self) -> None:
        """Fit in the background, retrying with back-off until the embeddings service answers;
        until then the tagger reports `not_ready` and the next step decides."""

        async def fit_until_done() -> None:
            delay = self.retry_delay_s
            while True:
                try:
                    await self.fit()
                    log.info("embedding tagger ready: %d examples", len(self.examples))
                    return
                except Exception as error:  # noqa: BLE001 - the service may simply not be up yet
                    log.info("embedding tagger not ready (%s: %s); retrying in %.1fs", type(error).__name__, error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

        self._warmup = asyncio.ensure_future(fit_until_done())

    async def close(self) -> None:
        if self._warmup is not None:
            self._warmup.cancel()

    def nearest(self, vector: Vector) -> int | None:
        v = unit(vector)
        scored = sorted(((math.fsum(a * b for a, b in zip(v, c)), level) for level, c in self.centroids.items()),
                        reverse=True)
        if len(scored) > 1 and scored[0][0] - scored[1][0] < self.min_margin:
            return None
        return scored[0][1]

    async def classify(self, text: str) -> int | None:
        if not self.centroids:
            raise NotReady
        return self.nearest(await self.batcher.embed(text))
