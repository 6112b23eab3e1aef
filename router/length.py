"""LengthPredictor: how many tokens an answer will probably have.

A moving average of what each model has answered, capped by the request's own limit. The
scheduling paper found length errors matter far less than priority errors, so a cheap,
self-correcting estimate is enough for ordering and load accounting.
"""

from __future__ import annotations

import re

_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


class LengthPredictor:
    def __init__(self, default_tokens: int = 256, smoothing: float = 0.1, max_models: int = 1024) -> None:
        self.default_tokens = default_tokens
        self.smoothing = smoothing
        self.max_models = max_models
        self._average: dict[str, float] = {}

    def predict(self, model: str, limit: int | None) -> int:
        guess = round(self._average.get(model, self.default_tokens))
        return max(1, min(guess, limit) if limit else guess)

    def observe(self, model: str, completion_tokens: int) -> None:
        average = self._average.get(model)
        if average is None:
            if len(self._average) >= self.max_models:
                return
            self._average[model] = float(completion_tokens)
        else:
            self._average[model] = average + self.smoothing * (completion_tokens - average)

    def observe_usage(self, model: str, payload: bytes) -> None:
        """Learn from a response body or stream chunk that reports usage."""
        match = _COMPLETION_TOKENS.search(payload)
        if match:
            self.observe(model, int(match.group(1)))
