"""PrefixFingerprint: chained hashes over a canonical rendering of the prompt.

Two requests that start with the same conversation get the same leading block hashes, whatever
the JSON spelling (key order, whitespace), so they can be sent where that prefix is cached.
The hashes are xxh3-64, stable across processes and restarts, so every router replica
computes the same fingerprint for the same request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import xxhash

from triage_router.router.api_types import ChatCompletionRequest, ChatMessage, CompletionRequest

# Separators that do not occur in ordinary text, so "ab"+"c" and "a"+"bc" render differently.
_FIELD = "\x1f"
_RECORD = "\x1e"
_LEADING_ROLES = ("system", "developer")
# A rough tokens-per-character rate, for sizing and placement only; no tokenizer is loaded.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class PrefixFingerprint:
    block_hashes: tuple[int, ...]
    # Characters in the rendered prompt, hashed or not.
    chars: int

    @property
    def prompt_tokens(self) -> int:
        return self.chars // CHARS_PER_TOKEN + 1


def _part_text(part: Any) -> str:
    """Text parts as text; anything else (images, audio, files) by the hash of its canonical JSON."""
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    digest = xxhash.xxh3_64_hexdigest(msgspec.json.encode(part, order="sorted"))
    kind = part.get("type", "part") if isinstance(part, dict) else "part"
    return f"<{kind}:{digest}>"


def _render_message(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = "".join(_part_text(part) for part in content)
    return f"{message.role}{_FIELD}{text}{_RECORD}"


def render_prompt(request: ChatCompletionRequest | CompletionRequest) -> str:
    """The conversation as an engine's chat template would lay it out: system prompt, tools,
    then every message in order."""
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        return prompt if isinstance(prompt, str) else msgspec.json.encode(prompt).decode()
    messages = request.messages
    leading = 0
    while leading < len(messages) and messages[leading].role in _LEADING_ROLES:
        leading += 1
    rendered = [_render_message(m) for m in messages[:leading]]
    if request.tools:
        rendered.append(f"tools{_FIELD}{msgspec.json.encode(request.tools, order='sorted').decode()}{_RECORD}")
    rendered.extend(_render_message(m) for m in messages[leading:])
    return "".join(rendered)


def fingerprint(
    request: ChatCompletionRequest | CompletionRequest, block_chars: int, max_blocks: int
) -> PrefixFingerprint:
    """h_i = xxh3(block_i ‖ h_{i-1}), h_0 seeded by the model name; full blocks only, at most
    `max_blocks` of them (a partial last block could never match a longer request)."""
    text = render_prompt(request)
    previous = xxhash.xxh3_64_intdigest(request.model.encode())
    hashes = []
    for start in range(0, min(len(text) // block_chars, max_blocks) * block_chars, block_chars):
        block = text[start : start + block_chars].encode()
        previous = xxhash.xxh3_64_intdigest(block + previous.to_bytes(8, "little"))
        hashes.append(previous)
    return PrefixFingerprint(tuple(hashes), len(text))
