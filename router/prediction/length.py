"""LengthPredictor: how many completion tokens an answer will probably have, before dispatch.

It predicts a median and a high quantile from features known at arrival: the model, the kind of
request (chat, completion, JSON mode, tool call), the priority and the step that decided it
(which rule, which tagger), the tenant, the prompt's length, a verbosity cue in the text ("in
one sentence", "a detailed 3000-word report"), and `max_tokens`, which caps both figures.

Each group of requests that share some of those features keeps a histogram of the lengths it
has seen, on a log scale (4 bins per doubling, so ±9% resolution from 1 to 65,536 tokens),
decayed so that behaviour that changes is followed. A prediction starts from the prior
(`prior_tokens`, weighing `prior_weight` observations) and refines it from the most general
group to the most specific: each step mixes in a group's histogram, the less it has seen the
less it counts (hierarchical shrinkage). A new kind of request therefore gets the best estimate
of its coarser groups, and a well-known kind its own distribution.

Memory is bounded (`max_groups` histograms, least recently used dropped) and the state can be
saved to a file and read back across restarts. The scheduling paper found length errors matter
far less than priority errors, so this aims to be cheap and self-correcting rather than exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from triage_router.router.config import LengthConfig

log = logging.getLogger("triage.length")

BINS_PER_DOUBLING = 4
MAX_DOUBLINGS = 16
BINS = BINS_PER_DOUBLING * MAX_DOUBLINGS + 1
# How many observations a group needs before it counts as much as everything coarser.
SHRINKAGE = 8.0
# A prediction is reused until the predictor has learned from this many more answers:
# recomputing one costs about 100 µs, and one answer barely moves it. Under heavy load it is
# also reused for REFRESH_AFTER_S, so that the cost does not grow with the request rate.
REFRESH_OBSERVATIONS = 8
REFRESH_AFTER_S = 0.1

# The verbosity cues, as one pattern over lower-cased text, so that a long turn is scanned once
# (three case-insensitive searches took 0.27 ms for 1,200 characters; this takes about half).
_CUES = re.compile(
    r"\b(?P<words>\d{2,5})[\s-]*(?:words?|word-long)\b"
    r"|(?P<short>\b(?:(?:one|a single|1|two|2|three|3) (?:sentences?|words?|lines?|paragraph)|briefly|brief|short"
    r"|quick|concise|tl;?dr|yes or no|one-liner|just the (?:answer|number|name|code))\b)"
    r"|(?P<long>\b(?:detailed|comprehensive|thorough|in[- ]depth|essay|report|article|chapter|whitepaper|handbook"
    r"|documentation|full|complete|long|extensive|step[- ]by[- ]step|plan|itinerary|story)\b)"
)


def verbosity_cue(text: str) -> str:
    """"words:<k>" when about 2^k tokens are asked for in words, else "short", "long" or ""."""
    short = long = False
    for match in _CUES.finditer(text.lower()):
        kind = match.lastgroup
        if kind == "words":
            # About 4 tokens for 3 English words.
            return f"words:{round(math.log2(max(1, int(match.group(1)) * 4 // 3)))}"
        if kind == "short":
            short = True
        else:
            long = True
    if short and not long:
        return "short"
    if long and not short:
        return "long"
    return ""


def _bin(tokens: float) -> int:
    return min(BINS - 1, max(0, round(math.log2(max(tokens, 1.0)) * BINS_PER_DOUBLING)))


def _tokens(bin_index: float) -> float:
    return 2 ** (bin_index / BINS_PER_DOUBLING)


def prompt_bin(prompt_tokens: int) -> str:
    """Prompt length by powers of 4: "p0" up to 16 tokens, "p1" to 64, ... "p4" beyond 1,024."""
    return f"p{min(4, max(0, math.ceil(math.log(max(prompt_tokens, 1) / 16, 4))))}"


class LengthFeatures(NamedTuple):
    """What a prediction is made from; a key of the predictor's cache. A named tuple: built and
    hashed for every request, and a frozen dataclass cost three times as much to build."""

    model: str
    # "chat", "completion", "json" or "tools".
    kind: str
    priority: int
    # The step that decided the priority: "rule:<name>", "embedding", "llm", "header", "default".
    source: str
    tenant: str
    prompt_tokens: int
    max_tokens: int | None
    cue: str

    def groups(self) -> list[tuple[str, ...]]:
        """From the most general to the most specific."""
        p, level = prompt_bin(self.prompt_tokens), str(self.priority)
        return [
            ("model", self.model),
            ("kind", self.model, self.kind),
            ("tenant", self.model, self.kind, self.tenant),
            ("level", self.model, self.kind, level),
            ("cue", self.model, self.kind, self.cue),
            ("level-cue", self.model, self.kind, level, self.cue),
            ("source-cue-prompt", self.model, self.kind, self.source, self.cue, p),
        ]


@dataclass(frozen=True, slots=True)
class LengthPrediction:
    features: LengthFeatures
    median: int
    high: int
    # The expected length: finer than the median for ranking requests that mostly hit a cap.
    mean: float
    # features.groups(), kept: a prediction is reused by many requests, and each answer teaches them.
    groups: tuple[tuple[str, ...], ...]


class _Histogram:
    """Exponentially decayed counts per bin. The decay is applied lazily: `_raw` holds counts
    divided by `_scale`, so adding one observation touches one bin instead of all of them."""

    __slots__ = ("_raw", "_scale", "total")

    def __init__(self, counts: list[float] | None = None) -> None:
        self._raw = list(counts) if counts is not None else [0.0] * BINS
        self._scale = 1.0
        self.total = math.fsum(self._raw)

    @property
    def counts(self) -> list[float]:
        scale = self._scale
        return [c * scale for c in self._raw]

    def add(self, bin_index: int, decay: float) -> None:
        self._scale *= decay
        if self._scale < 1e-200:  # fold the scale in long before it underflows
            self._raw, self._scale = self.counts, 1.0
        self._raw[bin_index] += 1.0 / self._scale
        self.total = self.total * decay + 1.0


def _quantile(counts: list[float], q: float) -> float:
    """Interpolated within the bin, on the log scale."""
    total = math.fsum(counts)
    wanted = q * total
    seen = 0.0
    for index, count in enumerate(counts):
        if count > 0 and seen + count >= wanted:
            return _tokens(index - 0.5 + (wanted - seen) / count)
        seen += count
    return _tokens(BINS - 1)


class LengthPredictor:
    def __init__(self, config: LengthConfig | None = None) -> None:
        self.config = config or LengthConfig()
        self._groups: OrderedDict[tuple[str, ...], _Histogram] = OrderedDict()
        self._observations = 0
        self._predictions: dict[LengthFeatures, tuple[int, float, LengthPrediction]] = {}
        self._prior = [0.0] * BINS
        self._prior[_bin(self.config.prior_tokens)] = self.config.prior_weight
        if self.config.state_file:
            self.load(self.config.state_file)

    def __len__(self) -> int:
        return len(self._groups)

    def predict(self, features: LengthFeatures) -> LengthPrediction:
        """Cached per feature set; a cached answer is recomputed once the predictor has seen
        `REFRESH_OBSERVATIONS` more answers and REFRESH_AFTER_S have passed: stale by a few answers
        at low rates, by a tenth of a second at high ones."""
        cached = self._predictions.get(features)
        now = time.monotonic()
        if cached is not None and (self._observations - cached[0] < REFRESH_OBSERVATIONS
                                   or now - cached[1] < REFRESH_AFTER_S):
            return cached[2]
        prediction = self._compute(features)
        if len(self._predictions) >= self.config.max_groups:
            self._predictions.clear()
        self._predictions[features] = (self._observations, now, prediction)
        return prediction

    def _compute(self, features: LengthFeatures) -> LengthPrediction:
        mixed = list(self._prior)
        if features.cue.startswith("words:"):
            # A length asked for in words is a better prior than the global one.
            mixed = [0.0] * BINS
            mixed[_bin(2 ** int(features.cue[6:]))] = self.config.prior_weight
        groups = tuple(features.groups())
        for key in groups:
            group = self._groups.get(key)
            if group is None or group.total <= 0:
                continue
            # The coarser estimate keeps the weight of SHRINKAGE observations.
            scale = SHRINKAGE / math.fsum(mixed)
            mixed = [group_count + scale * m for group_count, m in zip(group.counts, mixed)]
        median = _quantile(mixed, 0.5)
        high = max(median, _quantile(mixed, self.config.quantile))
        cap = features.max_tokens if features.max_tokens and features.max_tokens > 0 else None
        if cap is not None:
            # Answers cut at the cap pile up in the cap's bin, where interpolating would land
            # below the cap: a quantile in that bin is the cap.
            median, high = (cap if _bin(q) >= _bin(cap) else min(q, cap) for q in (median, high))
        ceiling = cap if cap is not None else math.inf
        mean = math.fsum(c * min(_tokens(i), ceiling) for i, c in enumerate(mixed)) / math.fsum(mixed)
        return LengthPrediction(features, max(1, round(median)), max(1, round(high)), mean, groups)

    def observe(self, features: LengthFeatures, completion_tokens: int) -> None:
        self._learn(features.groups(), completion_tokens)

    def learn(self, prediction: LengthPrediction, completion_tokens: int) -> None:
        """What the answer to a request predicted as `prediction` turned out to be."""
        self._learn(prediction.groups, completion_tokens)

    def _learn(self, groups: Sequence[tuple[str, ...]], completion_tokens: int) -> None:
        self._observations += 1
        bin_index = _bin(completion_tokens)
        decay = self.config.decay
        for key in groups:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Histogram()
                if len(self._groups) > self.config.max_groups:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end(key)
            group.add(bin_index, decay)

    def snapshot(self) -> list[tuple[tuple[str, ...], list[float]]]:
        return [(key, list(group.counts)) for key, group in self._groups.items()]

    def save(self, path: str | os.PathLike[str], snapshot: list[tuple[tuple[str, ...], list[float]]] | None = None) -> None:
        """Write the histograms atomically (a temporary file, then a rename)."""
        groups = self.snapshot() if snapshot is None else snapshot
        state = {"version": 1, "bins_per_doubling": BINS_PER_DOUBLING,
                 "groups": [[list(key), [round(c, 4) for c in counts]] for key, counts in groups]}
        target = Path(path)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(json.dumps(state, separators=(",", ":")))
        temporary.replace(target)

    async def save_periodically(self) -> None:
        """Every `save_interval_s`: copy the state on the event loop, write it in a thread."""
        while True:
            await asyncio.sleep(self.config.save_interval_s)
            try:
                await asyncio.to_thread(self.save, self.config.state_file, self.snapshot())
            except OSError as error:
                log.warning("length predictor: cannot save to %s: %s", self.config.state_file, error)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Read what `save` wrote; a missing or unreadable file leaves the prior in place."""
        try:
            state = json.loads(Path(path).read_text())
            if state.get("version") != 1 or state.get("bins_per_doubling") != BINS_PER_DOUBLING:
                raise ValueError("written by another version")
            groups = [(tuple(str(k) for k in key), [float(c) for c in counts]) for key, counts in state["groups"]]
            if any(len(counts) != BINS for _, counts in groups):
                raise ValueError("histograms of the wrong size")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("length predictor: ignoring %s: %s", path, error)
            return
        for key, counts in groups[-self.config.max_groups :]:
            self._groups[key] = _Histogram(counts)
