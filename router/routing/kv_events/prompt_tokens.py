"""PromptTokenizer: a request's prompt as the token ids its backend will hash.

vLLM renders a chat request with the model's chat template, then encodes the text without
adding special tokens (the template writes them); a completion's text is encoded with them.
This does the same with `tokenizers` (the Rust tokenizer transformers wraps) and jinja2, so the
router imports neither transformers nor torch.

Encoding is the cost: ~5 ms for a 2,000-token system prompt on this project's CPUs. The text is
therefore split at the tokenizer's added tokens (`<|im_start|>` and the like), which the
tokenizer itself never merges across, and each piece's ids are cached: a conversation's system
prompt and earlier turns are encoded once, only the new turn each time. At load, a probe checks
that encoding the pieces equals encoding the whole; a tokenizer for which it does not (some
SentencePiece ones prefix each piece) caches whole prompts only. A long uncached text is encoded
on a worker thread, so the event loop never waits for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from triage_router.router.routing.kv_events.block_hashes import pack_tokens, prefix_hashes

log = logging.getLogger("triage.kv_events")

# Uncached characters above which encoding moves off the event loop (~0.5 ms of work).
THREAD_ABOVE_CHARS = 2048
# Cached token ids, in tokens (4 bytes each, plus the text as the key).
CACHE_TOKENS = 2_000_000

_PROBE = [
    {"role": "system", "content": "You are a careful assistant.  Answer briefly.\n"},
    {"role": "user", "content": "Hello there! What's 2+2?"},
    {"role": "assistant", "content": " It is 4."},
    {"role": "user", "content": "\nand 3 + 3 ?"},
]


class TokenizerLoadError(Exception):
    pass


class PromptTokens:
    """A prompt's packed token ids, with its block hashes computed once per block size."""

    __slots__ = ("packed", "_hashes")

    def __init__(self, packed: bytes) -> None:
        self.packed = packed
        self._hashes: dict[int, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.packed) // 4

    def block_hashes(self, block_size: int, max_blocks: int) -> tuple[int, ...]:
        found = self._hashes.get(block_size)
        if found is None:
            found = self._hashes[block_size] = prefix_hashes(self.packed, block_size, max_blocks)
        return found


class PromptTokenizer:
    def __init__(self, path: str | Path) -> None:
        directory = Path(path).expanduser()
        try:
            self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            config = _read_json(directory / "tokenizer_config.json")
        except Exception as error:  # tokenizers raises a bare Exception; json a ValueError
            raise TokenizerLoadError(f"cannot load the tokenizer in {directory}: {error}") from error
        self.path = str(directory)
        self.template = _template(directory, config)
        self.special_tokens = {name: _token_text(config.get(name)) for name in
                               ("bos_token", "eos_token", "unk_token", "pad_token")}
        added = sorted((t.content for t in self.tokenizer.get_added_tokens_decoder().values()), key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(map(re.escape, added)) + ")") if added else None
        self._added_ids = {text: self.tokenizer.token_to_id(text) for text in added}
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_tokens = 0
        self.splits = self._splitter is not None and self._splitting_is_exact()
        if not self.splits:
            log.info("kv events: the tokenizer in %s caches whole prompts only", directory)

    async def chat(self, body: dict[str, Any]) -> PromptTokens | None:
        """A chat request's prompt tokens, or None when this router cannot render it as the
        backend will (images, audio, continue_final_message, a template error)."""
        text = self.render(body)
        if text is None:
            return None
        return await self.encode(text, add_special_tokens=body.get("add_special_tokens") is True)

    async def completion(self, body: dict[str, Any]) -> PromptTokens | None:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and all(type(token) is int for token in prompt):
            return PromptTokens(pack_tokens(prompt))
        if not isinstance(prompt, str):
            return None  # a batch of prompts: no one prefix to match
        return await self.encode(prompt, add_special_tokens=body.get("add_special_tokens", True) is not False)

    def render(self, body: dict[str, Any]) -> str | None:
        if self.template is None or body.get("continue_final_message"):
            return None
        messages = [_template_message(m) for m in body.get("messages") or ()]
        if not messages or None in messages:
            return None
        kwargs = body.get("chat_template_kwargs")
        try:
            return self.template.render(
                messages=messages, tools=body.get("tools"), add_generation_prompt=body.get("add_generation_prompt", True),
                **self.special_tokens, **(kwargs if isinstance(kwargs, dict) else {}))
        except (jinja2.TemplateError, TypeError, ValueError) as error:
            log.debug("kv events: the chat template failed on a request: %s", error)
            return None

    async def encode(self, text: str, add_special_tokens: bool = False) -> PromptTokens:
        pieces = self._pieces(text) if self.splits and not add_special_tokens else [text]
        key = "\x00" if add_special_tokens else ""  # the same text, encoded the other way
        missing = [piece for piece in dict.fromkeys(pieces) if key + piece not in self._cache and piece not in self._added_ids]
        if missing:
            if sum(map(len, missing)) > THREAD_ABOVE_CHARS:
                encoded = await asyncio.to_thread(self._encode_all, missing, add_special_tokens)
            else:
                encoded = self._encode_all(missing, add_special_tokens)
            for piece, packed in zip(missing, encoded):
                self._remember(key + piece, packed)
        return PromptTokens(b"".join(self._piece_tokens(key, piece) for piece in pieces))

    def _piece_tokens(self, key: str, piece: str) -> bytes:
        if (token := self._added_ids.get(piece)) is not None:
            return pack_tokens((token,))
        packed = self._cache.get(key + piece)
        if packed is None:  # evicted since this request encoded it (a cache smaller than one prompt)
            return pack_tokens(self.tokenizer.encode(piece, add_special_tokens=key != "").ids)
        self._cache.move_to_end(key + piece)
        return packed

    def _pieces(self, text: str) -> list[str]:
        assert self._splitter is not None
        return [piece for piece in self._splitter.split(text) if piece]

    def _encode_all(self, texts: list[str], add_special_tokens: bool) -> list[bytes]:
        # One at a time: encode_batch's thread pool costs more than a short turn's encoding.
        return [pack_tokens(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids) for text in texts]

    def _remember(self, key: str, packed: bytes) -> None:
        self._cache[key] = packed
        self._cached_tokens += len(packed) // 4
        while self._cached_tokens > CACHE_TOKENS and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_tokens -= len(dropped) // 4

    def _splitting_is_exact(self) -> bool:
        text = self.render({"messages": _PROBE}) or "".join(m["content"] for m in _PROBE)
        whole = self.tokenizer.encode(text, add_special_tokens=False).ids
        pieces: list[int] = []
        for piece in self._pieces(text):
            token = self._added_ids.get(piece)
            pieces.extend([token] if token is not None else self.tokenizer.encode(piece, add_special_tokens=False).ids)
        return pieces == whole


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    found = json.loads(path.read_text())
    return found if isinstance(found, dict) else {}


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json gives it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


def _template(directory: Path, config: dict[str, Any]) -> jinja2.Template | None:
    """The chat template, where transformers keeps it: chat_template.jinja, else the config's
    `chat_template` (a string, or a list of named ones, of which "default")."""
    source: Any = None
    if (directory / "chat_template.jinja").exists():
        source = (directory / "chat_template.jinja").read_text()
    else:
        source = config.get("chat_template")
        if isinstance(source, list):
            source = next((t.get("template") for t in source if isinstance(t, dict) and t.get("name") == "default"), None)
    if not isinstance(source, str):
        return None
    # The environment transformers renders chat templates in, so that templates behave the same.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Iterable[str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=tuple(separators) if separators else None, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _template_message(message: Any) -> dict[str, Any] | None:
    """A message as vLLM hands it to a string-content template: text parts joined by newlines;
    None for anything else (an image's placeholder tokens are the backend's to choose)."""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            return None
        message = {**message, "content": "\n".join(texts)}
    return message
