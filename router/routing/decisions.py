"""RecentDecisions: the dispatcher's last placements and refusals, for the status page.

The dispatcher appends one tuple per decision to a bounded deque, on the hot path: nothing is
formatted there. `router/http/status.py` turns them into text when `/status` is read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from triage_router.policies.placement import Placement
from triage_router.router.errors import ApiError
from triage_router.router.routing.admission import Job

# Enough to see what just happened on a busy router; a page, not a log.
RECENT_DECISIONS = 50


class Placed(NamedTuple):
    at: float  # the dispatcher's clock
    request_id: str
    model: str
    priority: int
    priority_source: str
    backend: str
    placement: Placement
    saturated: dict[str, str]
    queue_wait_s: float
    # A second placement after a backend failed before the first byte.
    retry: bool


class Refused(NamedTuple):
    at: float
    request_id: str
    model: str
    priority: int
    priority_source: str
    status: int
    code: str
    message: str


class RecentDecisions:
    def __init__(self, size: int = RECENT_DECISIONS) -> None:
        self._entries: deque[Placed | Refused] = deque(maxlen=size)

    def placed(self, at: float, job: Job, backend: str, placement: Placement, saturated: dict[str, str]) -> None:
        self._entries.append(Placed(at, job.request_id, job.model, job.priority, job.priority_source, backend,
                                    placement, saturated, at - job.arrival, bool(job.exclude)))

    def refused(self, at: float, job: Job, error: ApiError) -> None:
        # The error's fields, not the error: it holds its traceback, and with it the frames.
        self._entries.append(Refused(at, job.request_id, job.model, job.priority, job.priority_source,
                                     error.status, error.code or error.error_type, error.message))

    def newest_first(self) -> Iterator[Placed | Refused]:
        return reversed(self._entries)
