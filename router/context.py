"""RequestContext: what the router knows about one request as it moves through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from triage_router.router.api_types import AnyRequest, Endpoint
from triage_router.router.config import ApiKeyConfig
from triage_router.router.prediction.length import LengthPrediction
from triage_router.router.translation.api_translation import ApiTranslation


@dataclass(slots=True)
class PriorityDecision:
    """The priority a request runs at, and which step of the resolution decided it."""

    priority: int
    # "header", "rule:<name>", "embedding", "llm" or "default".
    source: str
    # What the client asked for (or the content earned), when a key's cap changed it.
    clamped_from: int | None = None
    # The `raise`/`lower` rules that moved the level, in the order they matched.
    adjusted_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Shift:
    """Move a level by `levels` (positive: less urgent), but not past `stop_at`; a level already
    past it stays where it is."""

    levels: int
    stop_at: int | None = None

    def apply(self, level: int) -> int:
        moved = min(4, max(0, level + self.levels))
        if self.stop_at is None:
            return moved
        if self.levels > 0:
            return max(level, min(moved, self.stop_at))
        return min(level, max(moved, self.stop_at))


@dataclass(frozen=True, slots=True)
class PriorityShift:
    """A step's partial answer: shifts for whatever a later step decides, applied in order,
    and the rules they come from. The rules' `raise`/`lower` produce it."""

    shifts: tuple[Shift, ...]
    rules: tuple[str, ...]

    def apply(self, level: int) -> int:
        for shift in self.shifts:
            level = shift.apply(level)
        return level


@dataclass(slots=True)
class Outcome:
    """How a request went, noted along its path for the access log and the trace, which are
    written once, when it ends (router/http/access_log.py, router/http/tracing.py)."""

    # The status sent to the client; 0 while none has been.
    status: int = 0
    # OpenAI's error code (or type) of an error answer.
    error: str = ""
    # The backend whose answer was relayed.
    backend: str = ""
    # From the answer's usage, when it reports one.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Seconds from the admission step to the first placement.
    queue_s: float | None = None
    # Seconds from arrival to the first token of a stream, or to a whole answer sent.
    ttft_s: float | None = None
    client_gone: bool = False


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: Endpoint
    # Lower-cased header names; the last value wins for repeated headers.
    headers: dict[str, str]
    body: bytes
    request: AnyRequest
    api_key: ApiKeyConfig | None
    arrived_at: float
    # Who the request belongs to (router/http/auth.py, tenant_of): never the raw key.
    tenant: str = ""
    priority: PriorityDecision | None = field(default=None)
    # Completion tokens expected, set before dispatch; the predictor learns from the answer.
    predicted: LengthPrediction | None = field(default=None)
    # The path (and query) the client called, forwarded as-is to the backend.
    path: str = ""
    # The model the backends are asked for: the client's, or what it is an alias or fallback of.
    upstream_model: str = ""
    # A Responses or Messages request: its body and the chat completion it translates to.
    translation: ApiTranslation | None = None
    outcome: Outcome = field(default_factory=Outcome)
    # The request's spans (router/http/request_trace.py, RequestTrace) while tracing is on, else None.
    trace: Any = None

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def stream(self) -> bool:
        return self.request.stream
