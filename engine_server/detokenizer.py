"""Incremental detokenization with stop strings.

Decoding token by token would break multi-byte characters and the leading-space rules of
SentencePiece, so each step decodes a short window (a few tokens of context plus the new
ones) and emits only the text past the window's known prefix, once it is no longer an
incomplete UTF-8 sequence.
"""

from __future__ import annotations

from typing import Any

_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_token_ids: list[int], stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.tokens = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)
        self.text = ""
        self.stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self.emitted = 0  # characters of self.text already returned by `take`

    def append(self, token_id: int) -> bool:
        """Add a token; True if a stop string now ends the text (the text is cut before it)."""
        self.tokens.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(self.tokens[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        full = decode(self.tokens[self.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            start = max(len(self.text) - self._hold - 1, 0)
            self.text += full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            return self._cut_at_stop(start)
        return False

    def _cut_at_stop(self, start: int) -> bool:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if not hits:
            return False
        self.text = self.text[: min(hits)]
        return True

    def take(self, final: bool) -> str:
        """Text not returned yet. Until the end, hold back what could be the start of a stop string."""
        end = len(self.text) if final or not self.stop else max(len(self.text) - self._hold, self.emitted)
        out = self.text[self.emitted:end]
        self.emitted = end
        return out
