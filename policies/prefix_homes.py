"""PrefixHomes: which backend each prompt root was last sent to, remembered long after the
prefix indexes have forgotten the root's blocks.

A root is a prompt's first block: in practice a tenant's system prompt or the start of a
conversation. On a backend whose cache is overcommitted, its prefix index forgets a tenant that
comes back less often than the others (bench/fleet run 14: seven tenants' blocks pass through
an index between two requests of the eighth). Placed afresh, the tenant can land on the other
backend, duplicating its prompt there and changing the split for good. Sending a forgotten
root back to where it was last sent keeps the fleet's partition of tenants stable, as the
sticky-by-tenant oracle does; an entry costs one int and one name, so the map can hold far
more roots than any cache.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixHomes:
    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = max(1, capacity)
        self._homes: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._homes)

    def home(self, root: int) -> str | None:
        """The backend `root` was last sent to, if remembered. Looking does not count as use."""
        return self._homes.get(root)

    def record(self, root: int, backend: str) -> None:
        self._homes[root] = backend
        self._homes.move_to_end(root)
        if len(self._homes) > self.capacity:
            self._homes.popitem(last=False)

    def placed(self, root: int, backend: str, matched_share: float, cache_threshold: float) -> None:
        """A request whose prompt starts with `root` was sent to `backend`, where that share of
        its prompt was cached. A root gets a home once a request
        shows that its prompts share more than the root block (a match above `cache_threshold`
        of the prompt), so that prompts alike only in their first block (a short common
        preamble) keep being spread as new prefixes; a root with a home follows its requests."""
        if root in self._homes or matched_share > cache_threshold:
            self.record(root, backend)
