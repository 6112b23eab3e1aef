"""The rule-based tagger: named rules from config.toml, matched in order.

Precedence, stated once: rules are examined in the order they are written. The first matching
rule with `priority` sets the level and ends the examination. Every matching `raise`/`lower`
rule met before it shifts that level, in order (a `stop_at` keeps a shift from going past a
level); if no rule sets one, their shifts apply to whatever the next steps (the model-based
taggers, the default) decide. An `x-priority` header is never shifted.

Matching cost is bounded: each examined text is cut to `tagging.max_input_chars`, every
pattern is compiled once at start-up with the `regex` module, and each search runs with its
timeout, so a catastrophic pattern costs at most `regex_timeout_ms` per rule on the event loop
(counted in `triage_rule_timeouts` and taken as no match) instead of stalling it.
"""

from __future__ import annotations

import fnmatch
import regex

from triage_router.router.config import RuleConfig, TaggingConfig
from triage_router.router.context import PriorityDecision, PriorityShift, RequestContext, Shift
from triage_router.router.metrics import RouterMetrics
from triage_router.router.request_text import examined_texts


class Keywords:
    """Whole words or phrases, case-insensitive; spaces inside a phrase match any whitespace.

    Most texts contain none of a rule's keywords, so a substring test of each keyword's first
    word on the lower-cased text (C speed) goes first; the word-boundary regex runs only after
    one of them is found.
    """

    def __init__(self, keywords: list[str]) -> None:
        words = sorted({" ".join(k.split()) for k in keywords if k.strip()}, key=len, reverse=True)
        self.first_words = tuple({word.split(" ")[0].lower() for word in words})
        body = "|".join(r"\s+".join(regex.escape(part) for part in word.split(" ")) for word in words)
        self.pattern = regex.compile(rf"(?<!\w)(?:{body})(?!\w)", regex.IGNORECASE)

    def search(self, text: str, lowered: str, timeout: float) -> bool:
        if not any(word in lowered for word in self.first_words):
            return False
        return self.pattern.search(text, timeout=timeout) is not None


class Pattern:
    def __init__(self, pattern: str) -> None:
        self.pattern = regex.compile(pattern, regex.IGNORECASE)

    def search(self, text: str, lowered: str, timeout: float) -> bool:
        return self.pattern.search(text, timeout=timeout) is not None


def _matchers(keywords: list[str], patterns: list[str]) -> list[Keywords | Pattern]:
    found: list[Keywords | Pattern] = [Keywords(keywords)] if any(k.strip() for k in keywords) else []
    return found + [Pattern(p) for p in patterns]


class Rule:
    def __init__(self, config: RuleConfig) -> None:
        self.name = config.name
        self.priority = config.priority
        self.shift = Shift(config.lower - config.raise_, config.stop_at)
        self.include = _matchers(config.keywords, config.patterns)
        self.exclude = _matchers(config.exclude_keywords, config.exclude_patterns)
        self.models = config.models
        self.tenants = frozenset(config.tenants)
        self.routes = frozenset(config.routes)
        self.roles = tuple(config.roles)
        self.latest_only = config.turns == "last"
        self.stream = config.stream
        self.max_length = config.max_length

    def applies_to(self, ctx: RequestContext, tenant: str) -> bool:
        """The conditions that need no text."""
        if self.routes and ctx.endpoint not in self.routes:
            return False
        if self.models and not any(fnmatch.fnmatchcase(ctx.model, glob) for glob in self.models):
            return False
        if self.tenants and tenant not in self.tenants:
            return False
        return self.stream is None or self.stream == ctx.stream


class RuleSet:
    """Evaluates the configured rules against one request."""

    def __init__(self, rules: list[RuleConfig], tagging: TaggingConfig, metrics: RouterMetrics) -> None:
        self.rules = [Rule(rule) for rule in rules]
        self.max_chars = tagging.max_input_chars
        self.timeout_s = tagging.regex_timeout_ms / 1000
        self.metrics = metrics

    def _search(self, rule: Rule, matcher: Keywords | Pattern, texts: list[tuple[str, str]]) -> bool:
        try:
            return any(matcher.search(text, lowered, self.timeout_s) for text, lowered in texts)
        except TimeoutError:
            self.metrics.child(self.metrics.rule_timeouts, rule.name).inc()
            return False

    def _matches(self, rule: Rule, ctx: RequestContext, tenant: str,
                 seen: dict[tuple[tuple[str, ...], bool], list[tuple[str, str]]]) -> bool:
        if not rule.applies_to(ctx, tenant):
            return False
        if not (rule.include or rule.exclude or rule.max_length):
            return True
        # Rules that read the same turns share one extraction per request.
        key = (rule.roles, rule.latest_only)
        texts = seen.get(key)
        if texts is None:
            texts = seen[key] = [(t, t.lower()) for t in examined_texts(ctx.request, rule.roles, rule.latest_only, self.max_chars)]
        if rule.max_length and sum(len(t) for t, _ in texts) > rule.max_length:
            return False
        if rule.include and not any(self._search(rule, m, texts) for m in rule.include):
            return False
        return not any(self._search(rule, m, texts) for m in rule.exclude)

    def evaluate(self, ctx: RequestContext) -> PriorityDecision | PriorityShift | None:
        tenant = ctx.tenant
        shifts: list[Shift] = []
        shifted_by: list[str] = []
        seen: dict[tuple[tuple[str, ...], bool], list[tuple[str, str]]] = {}
        for rule in self.rules:
            if not self._matches(rule, ctx, tenant, seen):
                continue
            if rule.priority is not None:
                found = PriorityShift(tuple(shifts), tuple(shifted_by))
                return PriorityDecision(found.apply(rule.priority), f"rule:{rule.name}", adjusted_by=found.rules)
            shifts.append(rule.shift)
            shifted_by.append(rule.name)
        return PriorityShift(tuple(shifts), tuple(shifted_by)) if shifted_by else None


class RulePriority:
    """The rules as a step of the priority resolution."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    async def decide(self, ctx: RequestContext) -> PriorityDecision | PriorityShift | None:
        return self.rules.evaluate(ctx)
