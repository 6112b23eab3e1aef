"""`RequestQueue`: one queue for every ordering, with the paper's O(1) arrival.

Structure (for a stable ordering, see `triage_router.policies.ordering`):

- arrivals go to an unsorted *arrival buffer*; the queue keeps a pointer to the buffer's best
  entry, so `push` costs one key computation and at most one comparison, and `peek` stays O(1);
- `drain()` moves the buffer into a binary heap. The scheduler calls it off the critical path
  (between iterations); `pop` drains first if it has to, so each entry pays one heap push and
  one heap pop: extraction is O(log n) amortized;
- `remove(request_id)` is O(1): the entry is marked dead and skipped when it surfaces (lazy
  deletion); the heap is compacted once dead entries outnumber live ones.

`Aged` orderings add a second heap keyed by arrival, consulted first: its head is returned
once it has waited past the bound. Grouped orderings (`VirtualTokenCounter`) keep one such
buffered heap per group and compare groups at pop, O(groups).

Invariants: every live request is in exactly one place of each structure it belongs to;
`len()` counts live requests only; keys are computed once, at push, with that push's `now`.
A request whose state changed (it ran, it was preempted) must be pushed again to be re-keyed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from triage_router.policies.aging import Aged
from triage_router.policies.ordering import Key, Ordering
from triage_router.policies.request import RequestState

R = TypeVar("R", bound=RequestState)


class GroupedOrdering(Protocol):
    """An ordering that ranks groups (tenants) by shared state, requests within by `inner`."""

    name: str
    inner: Ordering

    def group_of(self, req: RequestState) -> str: ...
    def group_rank(self, group: str, now: float) -> Key: ...
    def on_backlogged(self, group: str, backlogged: list[str]) -> None: ...


class _Entry:
    __slots__ = ("key", "seq", "req", "alive")

    def __init__(self, key: Key, seq: int, req: RequestState) -> None:
        self.key = key
        self.seq = seq
        self.req = req
        self.alive = True

    def __lt__(self, other: _Entry) -> bool:
        # Keys are compared with `<` only; seq breaks ties so equal keys stay FIFO.
        if self.key < other.key:
            return True
        if other.key < self.key:
            return False
        return self.seq < other.seq


class _BufferedHeap:
    """Arrival buffer with a best pointer, drained into a binary heap; lazy deletion."""

    def __init__(self) -> None:
        self.buffer: list[_Entry] = []
        self.best: _Entry | None = None
        self.best_stale = False  # the best was removed: rescan the buffer on the next peek
        self.heap: list[_Entry] = []
        self.live = 0
        self.dead = 0  # removed entries still physically in `buffer` or `heap`

    def push(self, e: _Entry) -> None:
        self.buffer.append(e)
        self.live += 1
        if not self.best_stale and (self.best is None or e < self.best):
            self.best = e

    def discard(self, e: _Entry) -> None:
        """Called after `e.alive` was cleared by a removal."""
        self.live -= 1
        self.dead += 1
        if e is self.best:
            self.best, self.best_stale = None, True
        if self.dead > 64 and self.dead > self.live:
            self._compact()

    def _drop_dead_from_buffer(self) -> None:
        kept = [e for e in self.buffer if e.alive]
        self.dead -= len(self.buffer) - len(kept)
        self.buffer = kept

    def drain(self) -> None:
        self._drop_dead_from_buffer()
        for e in self.buffer:
            heapq.heappush(self.heap, e)
        self.buffer.clear()
        self.best, self.best_stale = None, False

    def _compact(self) -> None:
        self._drop_dead_from_buffer()
        self.heap = [e for e in self.heap if e.alive]
        heapq.heapify(self.heap)
        self.dead = 0

    def _heap_top(self) -> _Entry | None:
        while self.heap and not self.heap[0].alive:
            heapq.heappop(self.heap)
            self.dead -= 1
        return self.heap[0] if self.heap else None

    def peek(self) -> _Entry | None:
        if self.best_stale:
            self._drop_dead_from_buffer()
            self.best = min(self.buffer) if self.buffer else None
            self.best_stale = False
        top = self._heap_top()
        if self.best is None:
            return top
        if top is None or self.best < top:
            return self.best
        return top

    def pop(self) -> _Entry | None:
        if self.buffer:
            self.drain()
        top = self._heap_top()
        if top is not None:
            heapq.heappop(self.heap)
            self.live -= 1
        return top


class RequestQueue(Generic[R]):
    """Waiting requests, best first, under any ordering. Request ids must be unique inside."""

    def __init__(self, ordering: Ordering | Aged | GroupedOrdering) -> None:
        self.ordering = ordering
        self._aging: Aged | None = None
        base = ordering
        if isinstance(ordering, Aged):
            self._aging, base = ordering, ordering.inner
        self._grouped: GroupedOrdering | None = None
        self._key_ordering: Ordering
        if hasattr(base, "group_rank"):  # e.g. VirtualTokenCounter
            self._grouped = base  # type: ignore[assignment]
            self._key_ordering = base.inner  # type: ignore[union-attr]
        elif base.stable:
            self._key_ordering = base  # type: ignore[assignment]
        else:
            raise TypeError(f"ordering {base.name!r} is neither stable nor grouped")
        self._single = _BufferedHeap()
        self._groups: dict[str, _BufferedHeap] = {}
        self._by_arrival: list[tuple[float, int, _Entry]] = []  # only with aging
        self._entries: dict[str, tuple[_Entry, _BufferedHeap]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._entries

    def __iter__(self) -> Iterator[R]:
        """Live requests in no particular order."""
        return (e.req for e, _ in self._entries.values())  # type: ignore[misc]

    def push(self, req: R, now: float) -> None:
        if req.request_id in self._entries:
            raise ValueError(f"request {req.request_id!r} is already queued")
        self._seq += 1
        entry = _Entry(self._key_ordering.key(req, now), self._seq, req)
        store = self._store_for(req)
        store.push(entry)
        self._entries[req.request_id] = (entry, store)
        if self._aging is not None:
            heapq.heappush(self._by_arrival, (req.arrival, self._seq, entry))
            if len(self._by_arrival) > 2 * len(self._entries) + 64:
                self._by_arrival = [t for t in self._by_arrival if t[2].alive]
                heapq.heapify(self._by_arrival)

    def _store_for(self, req: RequestState) -> _BufferedHeap:
        if self._grouped is None:
            return self._single
        group = self._grouped.group_of(req)
        store = self._groups.get(group)
        if store is None:
            store = self._groups[group] = _BufferedHeap()
        if store.live == 0:
            backlogged = [g for g, s in self._groups.items() if s.live > 0]
            self._grouped.on_backlogged(group, backlogged)
        return store

    def peek_id(self, request_id: str) -> R | None:
        """The queued request with this id, left in place, or None."""
        found = self._entries.get(request_id)
        return None if found is None else found[0].req  # type: ignore[return-value]

    def remove(self, request_id: str) -> R | None:
        found = self._entries.pop(request_id, None)
        if found is None:
            return None
        entry, store = found
        entry.alive = False
        store.discard(entry)
        return entry.req  # type: ignore[return-value]

    def drain(self) -> None:
        """Move arrivals into the heap(s). Call between iterations, off the critical path."""
        self._single.drain()
        for store in self._groups.values():
            store.drain()

    def _promoted(self, now: float) -> _Entry | None:
        assert self._aging is not None
        heap = self._by_arrival
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
        if heap and now - heap[0][0] >= self._aging.bound:
            return heap[0][2]
        return None

    def _best(self, now: float) -> tuple[_Entry, _BufferedHeap] | None:
        if self._aging is not None:
            promoted = self._promoted(now)
            if promoted is not None:
                return self._entries[promoted.req.request_id]
        if self._grouped is None:
            e = self._single.peek()
            return None if e is None else (e, self._single)
        best: tuple[Key, str] | None = None
        for group, store in self._groups.items():
            if store.live > 0:
                rank = (self._grouped.group_rank(group, now), group)
                if best is None or rank < best:
                    best = rank
        if best is None:
            return None
        store = self._groups[best[1]]
        e = store.peek()
        assert e is not None
        return e, store

    def peek(self, now: float) -> R | None:
        found = self._best(now)
        return None if found is None else found[0].req  # type: ignore[return-value]

    def pop(self, now: float) -> R:
        found = self._best(now)
        if found is None:
            raise IndexError("pop from an empty RequestQueue")
        entry, store = found
        if store.peek() is entry:
            popped = store.pop()
            assert popped is entry
            del self._entries[entry.req.request_id]
            entry.alive = False
        else:  # a promoted entry deep in its store: lazy-delete it there
            self.remove(entry.req.request_id)
        return entry.req  # type: ignore[return-value]
