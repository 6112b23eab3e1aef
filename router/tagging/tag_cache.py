"""TagCache: a bounded LRU of tagging answers, keyed by a hash of the examined text.

Repeated prompts (retries, templated batch jobs, a chat's fixed opening) skip the model. The
key is xxh3-128 of the text, so the cache holds no prompt text and its memory is fixed per entry.
"""

from __future__ import annotations

from collections import OrderedDict

import xxhash

# What a tagger answered: a level 0..4, or None when it abstained.
Answer = int | None
_MISSING = object()


class TagCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, Answer] = OrderedDict()

    @staticmethod
    def key(text: str) -> int:
        return xxhash.xxh3_128_intdigest(text.encode("utf-8", "surrogatepass"))

    def get(self, key: int) -> tuple[bool, Answer]:
        """(found, answer); a hit becomes the most recently used entry."""
        answer = self._entries.get(key, _MISSING)
        if answer is _MISSING:
            return False, None
        self._entries.move_to_end(key)
        return True, answer  # type: ignore[return-value]

    def put(self, key: int, answer: Answer) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = answer
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
