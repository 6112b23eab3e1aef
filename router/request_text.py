"""The text a tagger examines: chosen turns of a chat, or a completion's prompt, bounded.

Taggers look at words, so images and other non-text parts are skipped. Every text is cut to a
bounded length before any pattern or model sees it: keeping the head and the tail, because an
emergency may be stated in the last line of a long message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from triage_router.router.api_types import (
    AnyRequest,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
)

_CUT = "\n…\n"


def bounded(text: str, max_chars: int) -> str:
    """`text` if short enough, else its head and tail with a marker between them."""
    if len(text) <= max_chars:
        return text
    keep = max(0, max_chars - len(_CUT))
    head = keep - keep // 2
    return text[:head] + _CUT + text[len(text) - keep // 2 :]


def message_text(message: ChatMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(text for text in map(_part_text, content) if text)


def _part_text(part: Any) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    return ""


def prompt_text(request: CompletionRequest) -> str:
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    # A batch of prompts or token ids: only the strings are text.
    return "\n".join(item for item in prompt if isinstance(item, str))


def examined_texts(request: AnyRequest, roles: Iterable[str], latest_only: bool, max_chars: int) -> list[str]:
    """The texts of the messages with one of `roles` (only the latest one if `latest_only`),
    each bounded to `max_chars`. A completion's prompt and an embedding's input count as a user
    turn; other endpoints have no text."""
    roles = frozenset(roles)
    if isinstance(request, CompletionRequest):
        return [bounded(prompt_text(request), max_chars)] if "user" in roles else []
    if isinstance(request, EmbeddingRequest):
        inputs = [request.input] if isinstance(request.input, str) else request.input
        text = "\n".join(item for item in inputs if isinstance(item, str))
        return [bounded(text, max_chars)] if "user" in roles else []
    if not isinstance(request, ChatCompletionRequest):
        return []
    texts: list[str] = []
    for message in reversed(request.messages):
        if message.role in roles:
            texts.append(bounded(message_text(message), max_chars))
            if latest_only:
                break
    texts.reverse()
    return texts


def latest_user_text(request: AnyRequest, max_chars: int) -> str:
    texts = examined_texts(request, ("user",), True, max_chars)
    return texts[0] if texts else ""
