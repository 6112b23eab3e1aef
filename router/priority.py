"""Priority resolution: an ordered pipeline of steps; the first that decides wins.

0 is the most urgent level, 4 the least. The header step comes first, then (later) rules and
the language-model tagger, then the configured default, which always decides.
"""

from __future__ import annotations

from typing import Protocol

from router.context import PriorityDecision, RequestContext
from router.errors import BadRequest

MOST_URGENT = 0
LEAST_URGENT = 4


class PriorityStep(Protocol):
    async def decide(self, ctx: RequestContext) -> PriorityDecision | None:
        """Return a decision, or None to let the next step decide."""


class HeaderPriority:
    """`x-priority: 0..4`, clamped to what the request's API key may ask for."""

    def __init__(self, header: str) -> None:
        self.header = header.lower()

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
        cap = ctx.api_key.max_priority if ctx.api_key is not None else MOST_URGENT
        if asked < cap:
            return PriorityDecision(cap, "header", clamped_from=asked)
        return PriorityDecision(asked, "header")


class DefaultPriority:
    def __init__(self, priority: int) -> None:
        self.priority = priority

    async def decide(self, ctx: RequestContext) -> PriorityDecision:
        return PriorityDecision(self.priority, "default")


class PriorityResolver:
    def __init__(self, steps: list[PriorityStep], fallback: DefaultPriority) -> None:
        self.steps = steps
        self.fallback = fallback

    async def resolve(self, ctx: RequestContext) -> PriorityDecision:
        for step in self.steps:
            decision = await step.decide(ctx)
            if decision is not None:
                return decision
        return await self.fallback.decide(ctx)
