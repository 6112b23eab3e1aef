from __future__ import annotations

import asyncio

import pytest

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage
from triage_router.router.config import ModelTaggerConfig
from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.metrics import RouterMetrics
from triage_router.router.tagging.model_tagger import ModelTagger, NotReady, RejectedAnswer
from triage_router.router.tagging.priority import DefaultPriority, PriorityResolver
from triage_router.router.tagging.tag_cache import TagCache


def _ctx(text: str) -> RequestContext:
    request = ChatCompletionRequest("smol", [ChatMessage("system", "be brief"), ChatMessage("user", text)])
    return RequestContext("r1", "chat", {}, b"{}", request, None, 0.0)


class Scripted:
    """A classifier whose answers the test controls; it records what it was asked."""

    name = "llm"

    def __init__(self, answer: object = 1, gate: asyncio.Event | None = None) -> None:
        self.answer = answer
        self.gate = gate
        self.asked: list[str] = []

    async def classify(self, text: str) -> int | None:
        self.asked.append(text)
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _fallbacks(metrics: RouterMetrics, reason: str) -> float:
    metrics.flush()  # buffered children reach prometheus_client on a flush
    return metrics.tagger_fallbacks.labels("llm", reason)._value.get()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_answer_decides_and_is_cached_by_text() -> None:
    metrics = RouterMetrics()
    classifier = Scripted(3)
    tagger = ModelTagger(classifier, ModelTaggerConfig(), metrics)
    assert await tagger.decide(_ctx("write me a report")) == PriorityDecision(3, "llm")
    assert await tagger.decide(_ctx("write me a report")) == PriorityDecision(3, "llm")
    assert classifier.asked == ["write me a report"]
    metrics.flush()  # buffered children reach prometheus_client on a flush
    assert metrics.tagger_cache_hits.labels("llm")._value.get() == 1
    await tagger.decide(_ctx("something else"))
    assert classifier.asked == ["write me a report", "something else"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "reason"),
    [(RejectedAnswer("banana"), "rejected"), (7, "rejected"), (-1, "rejected"), ("2", "rejected"),
     (ConnectionError("refused"), "error"), (NotReady(), "not_ready"), (None, "abstained")],
)
async def test_failures_fall_back_to_the_next_step_and_are_counted(answer: object, reason: str) -> None:
    metrics = RouterMetrics()
    tagger = ModelTagger(Scripted(answer), ModelTaggerConfig(), metrics)
    resolver = PriorityResolver([tagger], DefaultPriority(2))
    assert await resolver.resolve(_ctx("hello")) == PriorityDecision(2, "default")
    assert _fallbacks(metrics, reason) == 1


@pytest.mark.anyio
async def test_a_tagger_past_its_budget_is_abandoned() -> None:
    metrics = RouterMetrics()
    never = asyncio.Event()
    tagger = ModelTagger(Scripted(0, gate=never), ModelTaggerConfig(timeout_ms=1), metrics)
    resolver = PriorityResolver([tagger], DefaultPriority(2))
    assert await resolver.resolve(_ctx("hello")) == PriorityDecision(2, "default")
    assert _fallbacks(metrics, "timeout") == 1
    assert tagger.in_flight == 0


@pytest.mark.anyio
async def test_at_the_concurrency_limit_requests_fall_back_instead_of_queueing() -> None:
    metrics = RouterMetrics()
    gate = asyncio.Event()
    classifier = Scripted(1, gate=gate)
    tagger = ModelTagger(classifier, ModelTaggerConfig(max_concurrency=1, timeout_ms=60_000), metrics)
    first = asyncio.ensure_future(tagger.decide(_ctx("one")))
    while not classifier.asked:
        await asyncio.sleep(0)
    assert await tagger.decide(_ctx("two")) is None
    assert _fallbacks(metrics, "busy") == 1
    gate.set()
    assert await first == PriorityDecision(1, "llm")


@pytest.mark.anyio
async def test_most_urgent_bounds_what_the_model_may_give() -> None:
    tagger = ModelTagger(Scripted(0), ModelTaggerConfig(most_urgent=1), RouterMetrics())
    assert await tagger.decide(_ctx("help")) == PriorityDecision(1, "llm")


@pytest.mark.anyio
async def test_only_the_latest_user_turn_bounded_is_sent() -> None:
    classifier = Scripted(2)
    tagger = ModelTagger(classifier, ModelTaggerConfig(max_input_chars=50), RouterMetrics())
    await tagger.decide(_ctx("a" * 100 + "TAIL"))
    (sent,) = classifier.asked
    assert len(sent) <= 50 and sent.startswith("a") and sent.endswith("TAIL")
    assert await tagger.decide(_ctx("   ")) is None


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = TagCache(2)
    a, b, c = (TagCache.key(t) for t in "abc")
    cache.put(a, 0)
    cache.put(b, 1)
    assert cache.get(a) == (True, 0)
    cache.put(c, None)
    assert cache.get(b) == (False, None)
    assert cache.get(a) == (True, 0) and cache.get(c) == (True, None)
    assert len(cache) == 2
    assert len(TagCache(0)) == 0
