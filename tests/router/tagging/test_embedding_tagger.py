from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import respx

from triage_router.router.config import EmbeddingTaggerConfig
from triage_router.router.tagging.embedding_tagger import EmbeddingClassifier, EmbeddingsClient, load_examples, parse_examples
from triage_router.router.tagging.model_tagger import NotReady

URL = "http://embed.test"
# A toy embedding: one axis per word, so the test knows every vector.
WORDS = ("dying", "outage", "question", "report", "batch")


def _vector(text: str) -> list[float]:
    lowered = text.lower()
    return [float(lowered.count(word)) + 0.01 for word in WORDS]


def _service(calls: list[list[str]]) -> respx.Route:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["model"] == "mini"
        calls.append(body["input"])
        data = [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(body["input"])]
        # Out of order on purpose: the index says which is which.
        return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": "mini"})

    return respx.post(f"{URL}/v1/embeddings").mock(side_effect=answer)


def _examples(tmp_path: Path) -> str:
    lines = [{"text": f"{word} {word} example {i}", "priority": level} for level, word in enumerate(WORDS) for i in range(3)]
    path = tmp_path / "examples.jsonl"
    path.write_text("// a comment\n\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    return str(path)


def _classifier(http: httpx.AsyncClient, tmp_path: Path, **config: object) -> EmbeddingClassifier:
    settings = EmbeddingTaggerConfig(model="mini", examples=[_examples(tmp_path)], **config)  # type: ignore[arg-type]
    return EmbeddingClassifier(EmbeddingsClient(http, URL, "mini", ""), settings)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@respx.mock
async def test_nearest_centroid_after_fitting_the_examples(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    _service(calls)
    async with httpx.AsyncClient() as http:
        classifier = _classifier(http, tmp_path, batch_size=4)
        with pytest.raises(NotReady):
            await classifier.classify("anything")
        await classifier.fit()
        assert [len(batch) for batch in calls] == [4, 4, 4, 3]
        assert await classifier.classify("my grandmother is dying") == 0
        assert await classifier.classify("a batch of files, one report each, batch batch") == 4
        assert await classifier.classify("a quick question") == 2


@pytest.mark.anyio
@respx.mock
async def test_requests_arriving_together_share_one_embeddings_call(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    _service(calls)
    async with httpx.AsyncClient() as http:
        classifier = _classifier(http, tmp_path)
        await classifier.fit()
        calls.clear()
        levels = await asyncio.gather(*(classifier.classify(t) for t in ("outage!", "report please", "question?")))
    assert levels == [1, 3, 2]
    assert calls == [["outage!", "report please", "question?"]]


@pytest.mark.anyio
@respx.mock
async def test_close_calls_abstain_with_a_margin(tmp_path: Path) -> None:
    _service([])
    async with httpx.AsyncClient() as http:
        classifier = _classifier(http, tmp_path, min_margin=0.1)
        await classifier.fit()
        assert await classifier.classify("outage report") is None
        assert await classifier.classify("outage outage") == 1


@pytest.mark.anyio
@respx.mock
async def test_an_error_reaches_every_waiting_caller(tmp_path: Path) -> None:
    route = _service([])
    async with httpx.AsyncClient() as http:
        classifier = _classifier(http, tmp_path)
        await classifier.fit()
        route.mock(return_value=httpx.Response(503))
        results = await asyncio.gather(classifier.classify("a"), classifier.classify("b"), return_exceptions=True)
    assert all(isinstance(r, httpx.HTTPStatusError) for r in results)


@pytest.mark.anyio
@respx.mock
async def test_start_retries_until_the_service_answers(tmp_path: Path) -> None:
    route = respx.post(f"{URL}/v1/embeddings")
    route.side_effect = [httpx.ConnectError("not up yet"), httpx.Response(500)]
    calls: list[list[str]] = []
    async with httpx.AsyncClient() as http:
        classifier = _classifier(http, tmp_path, batch_size=100)
        classifier.retry_delay_s = 0.001
        await classifier.start()
        assert classifier._warmup is not None
        # Once the failures are used up the service answers.
        while route.call_count < 2:
            await asyncio.sleep(0.01)
        _service(calls)
        await asyncio.wait_for(classifier._warmup, 10)
        assert classifier.ready
        await classifier.close()


def test_the_shipped_examples_cover_every_level() -> None:
    examples = load_examples([])
    counts = [sum(1 for _, level in examples if level == wanted) for wanted in range(5)]
    assert min(counts) >= 15, counts


@pytest.mark.parametrize(
    "line",
    ['{"text": "x"}', '{"text": "", "priority": 1}', '{"text": "x", "priority": 5}', '{"text": "x", "priority": true}',
     "not json"],
)
def test_a_bad_example_line_is_named(line: str) -> None:
    with pytest.raises(ValueError, match=r"^mine.jsonl:2: "):
        parse_examples('{"text": "ok", "priority": 0}\n' + line, "mine.jsonl")
