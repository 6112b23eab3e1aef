"""What an answer's usage is used for: the key's token charge, the length predictor's lesson and
the fair-share correction; and whether the router asks a stream for usage the client did not."""

from __future__ import annotations

from triage_router.router.context import RequestContext
from triage_router.router.http.auth import ApiKeys
from triage_router.router.http.stream_usage import asks_for_usage
from triage_router.router.metrics import RouterMetrics
from triage_router.router.prediction.length import LengthPredictor
from triage_router.router.routing.dispatcher import Dispatcher


class UsageAccounting:
    def __init__(self, *, generates: bool, stream_usage: bool, api_keys: ApiKeys, predictor: LengthPredictor,
                 dispatcher: Dispatcher, metrics: RouterMetrics) -> None:
        self.generates = generates
        self.stream_usage = stream_usage
        self.api_keys = api_keys
        self.predictor = predictor
        self.dispatcher = dispatcher
        self.metrics = metrics

    def adds_usage(self, ctx: RequestContext) -> bool:
        """Whether the router asks a chat or completion stream for usage the client did not ask
        for (and then filters it out). A translated stream always asks: its translator uses it."""
        return (self.generates and ctx.translation is None and self.stream_usage and ctx.stream
                and not asks_for_usage(ctx.body))

    def observe(self, ctx: RequestContext, payload: bytes) -> int | None:
        """Charge the key's tokens, note them for the access log and the trace, and teach the
        predictor from `payload`'s usage; returns the completion tokens, if any."""
        counts = self.api_keys.account(ctx.api_key, ctx.model, payload)
        if not counts:
            return None
        ctx.outcome.prompt_tokens = counts.get("prompt")
        tokens = ctx.outcome.completion_tokens = counts.get("completion")
        if ctx.predicted is not None and tokens is not None:
            self.predictor.learn(ctx.predicted, tokens)
            self.dispatcher.on_output(ctx.tenant, ctx.predicted.median, tokens)
            self.metrics.child(self.metrics.output_length_error, str(ctx.predicted.features.priority)).observe(
                tokens - ctx.predicted.median
            )
        return tokens
