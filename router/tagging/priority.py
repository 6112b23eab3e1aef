"""Priority resolution: an ordered pipeline of steps; the first that decides wins.

0 is the most urgent level, 4 the least. The header step comes first, then the rules, then the
model-based taggers (embedding classifier, language model), then the configured default, which
always decides. A step may also answer with a `PriorityShift` (a rule's `raise`/`lower`): it is
applied to whatever a later step decides, except to an explicit header.

Whatever decides, the request's API key caps the urgency: a key with `max_priority = 2` gets no
more than 2, whether it asks by header or its text earns more from a rule or a tagger. Text is
written by the client, so it must not buy more than the key may ask for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import httpx

from triage_router.policies.request import LEAST_URGENT, MOST_URGENT
from triage_router.router.config import Config, EmbeddingTaggerConfig, LlmTaggerConfig, ModelTaggerConfig
from triage_router.router.context import PriorityDecision, PriorityShift, RequestContext
from triage_router.router.tagging.embedding_tagger import EmbeddingClassifier, EmbeddingsClient
from triage_router.router.errors import BadRequest
from triage_router.router.tagging.llm_tagger import LlmClassifier
from triage_router.router.metrics import RouterMetrics
from triage_router.router.tagging.model_tagger import Classifier, ModelTagger
from triage_router.router.tagging.rules import RulePriority, RuleSet



class PriorityStep(Protocol):
    async def decide(self, ctx: RequestContext) -> PriorityDecision | PriorityShift | None:
        """Return a decision, a shift for the eventual decision, or None to let the next step decide."""


class HeaderPriority:
    """`x-priority: 0..4`, clamped to what the request's API key may ask for, or without a key
    to `anonymous_max_priority`."""

    def __init__(self, header: str, anonymous_max_priority: int = MOST_URGENT) -> None:
        self.header = header.lower()
        self.anonymous_max_priority = anonymous_max_priority

    async def decide(self, ctx: RequestContext) -> PriorityDecision | None:
        raw = ctx.headers.get(self.header)
        if raw is None:
            return None
        value = raw.strip()
        if len(value) != 1 or not "0" <= value <= "4":
            raise BadRequest(
                f"header {self.header}: expected an integer from {MOST_URGENT} (most urgent) "
                f"to {LEAST_URGENT} (least urgent), got {raw!r}",
                param=self.header,
                code="invalid_priority",
            )
        asked = int(value)
        cap = ctx.api_key.max_priority if ctx.api_key is not None else self.anonymous_max_priority
        if asked < cap:
            return PriorityDecision(cap, "header", clamped_from=asked)
        return PriorityDecision(asked, "header")


class DefaultPriority:
    def __init__(self, priority: int) -> None:
        self.priority = priority

    async def decide(self, ctx: RequestContext) -> PriorityDecision:
        return PriorityDecision(self.priority, "default")


class PriorityResolver:
    def __init__(
        self, steps: list[PriorityStep], fallback: DefaultPriority, metrics: RouterMetrics | None = None
    ) -> None:
        self.steps = steps
        self.fallback = fallback
        self.metrics = metrics

    async def resolve(self, ctx: RequestContext) -> PriorityDecision:
        decision = await self._decide(ctx)
        if self.metrics is not None:
            self.metrics.child(self.metrics.priority_decisions, str(decision.priority), decision.source).inc()
        return decision

    async def _decide(self, ctx: RequestContext) -> PriorityDecision:
        shifts: list[PriorityShift] = []
        for step in self.steps:
            answer = await step.decide(ctx)
            if isinstance(answer, PriorityShift):
                shifts.append(answer)
            elif answer is not None:
                decision = answer
                break
        else:
            decision = await self.fallback.decide(ctx)
        if decision.source == "header":
            return decision
        if shifts:
            level = decision.priority
            for shift in shifts:
                level = shift.apply(level)
            shifted_by = tuple(name for shift in shifts for name in shift.rules)
            decision = replace(decision, priority=level, adjusted_by=shifted_by + decision.adjusted_by)
        cap = ctx.api_key.max_priority if ctx.api_key is not None else MOST_URGENT
        if decision.priority < cap:
            decision = replace(decision, priority=cap, clamped_from=decision.priority)
        return decision


def build_resolver(
    config: Config, metrics: RouterMetrics, http: httpx.AsyncClient
) -> tuple[PriorityResolver, list[Classifier]]:
    """header → rules → model-based taggers in `tagging.order` → default; and the classifiers,
    which the app starts and closes with itself."""
    steps: list[PriorityStep] = [HeaderPriority(config.priority.header, config.priority.anonymous_max_priority)]
    if config.rules:  # no rules: no step to pay for on every request
        steps.append(RulePriority(RuleSet(config.rules, config.tagging, metrics)))
    classifiers: list[Classifier] = []
    for name in config.tagging.order:
        tagger: ModelTaggerConfig = getattr(config.tagging, name)
        if not tagger.enabled:
            continue
        base_url, api_key = _model_location(config, tagger)
        classifier: Classifier
        if name == "embedding":
            assert isinstance(tagger, EmbeddingTaggerConfig)
            classifier = EmbeddingClassifier(EmbeddingsClient(http, base_url, tagger.model, api_key), tagger)
        else:
            assert isinstance(tagger, LlmTaggerConfig)
            classifier = LlmClassifier(http, base_url, tagger, api_key)
        classifiers.append(classifier)
        steps.append(ModelTagger(classifier, tagger, metrics))
    return PriorityResolver(steps, DefaultPriority(config.priority.default), metrics), classifiers


def _model_location(config: Config, tagger: ModelTaggerConfig) -> tuple[str, str]:
    if tagger.url:
        return tagger.url, tagger.api_key
    backend = next(b for b in config.backends if b.name == tagger.backend)
    return backend.url, tagger.api_key or backend.api_key
