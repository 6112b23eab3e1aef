from __future__ import annotations

from typing import Any

from triage_router.router.api_types import ChatCompletionRequest
from triage_router.router.context import PriorityDecision, RequestContext
from triage_router.router.http.auth import ApiKeys
from triage_router.router.http.usage_accounting import UsageAccounting
from triage_router.router.metrics import RouterMetrics
from triage_router.router.prediction.length import LengthFeatures, LengthPredictor


class _Dispatcher:
    """Records the fair-share corrections it is told of."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, int, int]] = []

    def on_output(self, tenant: str, predicted: int, tokens: int) -> None:
        self.outputs.append((tenant, predicted, tokens))


def _accounting(predictor: LengthPredictor, dispatcher: Any, metrics: RouterMetrics) -> UsageAccounting:
    return UsageAccounting(generates=True, stream_usage=True, api_keys=ApiKeys([], metrics=metrics),
                           predictor=predictor, dispatcher=dispatcher, metrics=metrics)


def _context(predictor: LengthPredictor) -> RequestContext:
    request = ChatCompletionRequest(model="smol", messages=[])
    ctx = RequestContext("r", "chat", {}, b"{}", request, None, 0.0, tenant="team",
                         priority=PriorityDecision(2, "default"))
    ctx.predicted = predictor.predict(LengthFeatures("smol", "chat", 2, "default", "team", 40, None, ""))
    return ctx


def test_usage_is_charged_noted_and_learned_from() -> None:
    predictor, dispatcher, metrics = LengthPredictor(), _Dispatcher(), RouterMetrics()
    ctx = _context(predictor)
    answer = b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":17,"total_tokens":22}}'
    assert _accounting(predictor, dispatcher, metrics).observe(ctx, answer) == 17
    assert (ctx.outcome.prompt_tokens, ctx.outcome.completion_tokens) == (5, 17)
    assert dispatcher.outputs == [("team", ctx.predicted.median, 17)]
    assert len(predictor) == len(ctx.predicted.features.groups())
    rendered = metrics.render().decode()
    assert 'triage_tokens_total{key="anonymous",kind="completion",model="smol"} 17.0' in rendered


def test_an_answer_without_usage_teaches_nothing() -> None:
    predictor, dispatcher = LengthPredictor(), _Dispatcher()
    ctx = _context(predictor)
    assert _accounting(predictor, dispatcher, RouterMetrics()).observe(ctx, b'{"choices":[]}') is None
    assert ctx.outcome.completion_tokens is None
    assert dispatcher.outputs == [] and len(predictor) == 0

