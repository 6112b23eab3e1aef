from __future__ import annotations

import pytest

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage
from triage_router.router.config import ApiKeyConfig
from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.errors import BadRequest
from triage_router.router.tagging.priority import DefaultPriority, HeaderPriority, PriorityResolver


def _ctx(headers: dict[str, str], key: ApiKeyConfig | None = None) -> RequestContext:
    request = ChatCompletionRequest("smol", [ChatMessage("user", "hi")])
    return RequestContext("r1", "chat", headers, b"{}", request, key, 0.0)


def _resolver(default: int = 2) -> PriorityResolver:
    return PriorityResolver([HeaderPriority("X-Priority")], DefaultPriority(default))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["0", "1", "2", "3", "4", " 3 "])
async def test_header_sets_the_priority(value: str) -> None:
    decision = await _resolver().resolve(_ctx({"x-priority": value}))
    assert decision == PriorityDecision(int(value), "header")


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["urgent", "5", "7", "-1", "", "01", "1.0", "٣"])
async def test_anything_else_is_a_bad_request_naming_the_header(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await _resolver().resolve(_ctx({"x-priority": value}))
    assert caught.value.param == "x-priority"
    assert "x-priority" in caught.value.message


@pytest.mark.anyio
async def test_without_header_the_default_decides() -> None:
    assert await _resolver(default=3).resolve(_ctx({})) == PriorityDecision(3, "default")


@pytest.mark.anyio
async def test_key_cap_clamps_more_urgent_asks_only() -> None:
    key = ApiKeyConfig(key="k", max_priority=2)
    assert await _resolver().resolve(_ctx({"x-priority": "0"}, key)) == PriorityDecision(2, "header", clamped_from=0)
    assert await _resolver().resolve(_ctx({"x-priority": "2"}, key)) == PriorityDecision(2, "header")
    assert await _resolver().resolve(_ctx({"x-priority": "4"}, key)) == PriorityDecision(4, "header")


@pytest.mark.anyio
async def test_steps_run_in_order_and_the_first_decision_wins() -> None:
    calls: list[str] = []

    class Fixed:
        def __init__(self, name: str, decision: PriorityDecision | None) -> None:
            self.name, self.decision = name, decision

        async def decide(self, ctx: RequestContext) -> PriorityDecision | None:
            calls.append(self.name)
            return self.decision

    resolver = PriorityResolver(
        [Fixed("a", None), Fixed("b", PriorityDecision(1, "rule:b")), Fixed("c", PriorityDecision(4, "llm"))],
        DefaultPriority(2),
    )
    assert await resolver.resolve(_ctx({})) == PriorityDecision(1, "rule:b")
    assert calls == ["a", "b"]
