"""The request state every scheduling decision reads.

The router, the engine and the simulator each keep their own request objects. They only need
to expose the attributes of `RequestState` (plain attributes or properties) for every ordering,
queue and preemption rule here to work on them. `Request` is a ready-made implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class Priority(IntEnum):
    """Priority scale shared by the whole project: lower is more urgent (as in vLLM).

    Orderings accept any int, not just these five: a mis-tagged request may carry -1 or 7
    and must still sort consistently (the simulator injects such errors on purpose).
    """

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    BACKGROUND = 4


# The scale, defined here once for the router, the engine and the simulator.
MOST_URGENT = int(min(Priority))
LEAST_URGENT = int(max(Priority))
PRIORITY_LEVELS = len(Priority)
DEFAULT_PRIORITY = int(Priority.NORMAL)


class RequestState(Protocol):
    """What an ordering may read about a request. Token counts are in tokens, times in seconds.

    - `computed_tokens`: context tokens whose KV exists (resident or swapped out). A fresh
      request has 0; after a recompute preemption it drops back to 0.
    - `swapped_tokens`: the part of `computed_tokens` that sits in host memory and must be
      reloaded before the request can run again.
    - `app`: the application/session key for App-FIFO; `tenant`: the key for fair share.
      Either may be "" (then the request is its own app / the anonymous tenant).
    """

    @property
    def request_id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def arrival(self) -> float: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def predicted_output_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def computed_tokens(self) -> int: ...
    @property
    def swapped_tokens(self) -> int: ...
    @property
    def app(self) -> str: ...
    @property
    def tenant(self) -> str: ...


@dataclass(slots=True, eq=False)
class Request:
    """A mutable `RequestState`. Identity is `request_id`; eq=False keeps hashing by object."""

    request_id: str
    priority: int
    arrival: float
    prompt_tokens: int
    predicted_output_tokens: int
    output_tokens: int = 0
    computed_tokens: int = 0
    swapped_tokens: int = 0
    app: str = ""
    tenant: str = ""


def context_tokens(req: RequestState) -> int:
    """Tokens the request's KV must cover to produce its next token: prompt + generated."""
    return req.prompt_tokens + req.output_tokens


def remaining_output_tokens(req: RequestState) -> int:
    """Predicted tokens still to generate. Never negative: a request that outlived its
    prediction is treated as finishing next step, not as having negative work."""
    return max(req.predicted_output_tokens - req.output_tokens, 0)


def remaining_tokens(req: RequestState) -> int:
    """Token-count proxy for remaining work: context still to (re)compute plus output to go."""
    return max(context_tokens(req) - req.computed_tokens, 0) + remaining_output_tokens(req)
