from __future__ import annotations

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage, CompletionRequest
from triage_router.router.config import ApiKeyConfig
from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.prediction.length import LengthFeatures
from triage_router.router.prediction.features import features_of


def test_features_of_a_request() -> None:
    tools = ChatCompletionRequest("smol", [ChatMessage("user", "briefly, the weather?")], tools=[{"type": "function"}],
                                  max_tokens=50)
    ctx = RequestContext("r", "chat", {}, b"{}", tools, ApiKeyConfig(key="k", name="team"), 0.0, tenant="team",
                         priority=PriorityDecision(1, "rule:x"))
    assert features_of(ctx, 12) == LengthFeatures("smol", "tools", 1, "rule:x", "team", 12, 50, "short")
    json_mode = ChatCompletionRequest("smol", [ChatMessage("user", "hi")], response_format={"type": "json_object"})
    ctx = RequestContext("r", "chat", {}, b"{}", json_mode, None, 0.0, priority=PriorityDecision(2, "default"))
    assert features_of(ctx, 3).kind == "json"
    ctx = RequestContext("r", "completions", {}, b"{}", CompletionRequest("smol", "x"), None, 0.0,
                         priority=PriorityDecision(4, "llm"))
    assert features_of(ctx, 3).kind == "completion"
