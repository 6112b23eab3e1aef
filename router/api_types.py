"""The parts of OpenAI request bodies that Triage reads.

Only what routing needs is decoded; every other field stays in the original bytes, which are
forwarded untouched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from triage_router.router.errors import BadRequest

Endpoint = Literal["chat", "completions"]


class ChatMessage(msgspec.Struct):
    role: str
    # A string, a list of typed parts (text, image_url, ...), or null for tool-call turns.
    content: str | list[Any] | None = None


class ChatCompletionRequest(msgspec.Struct):
    model: str
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    stream: bool = False
    tools: list[Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    # Read for output-length prediction (JSON mode); any shape is accepted and forwarded.
    response_format: Any = None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(msgspec.Struct):
    model: str
    prompt: str | list[Any]
    stream: bool = False
    max_tokens: int | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens


_DECODERS = {
    "chat": msgspec.json.Decoder(ChatCompletionRequest),
    "completions": msgspec.json.Decoder(CompletionRequest),
}


def decode_request(endpoint: Endpoint, body: bytes) -> ChatCompletionRequest | CompletionRequest:
    """Validate a body; a problem becomes a 400 naming the offending field."""
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return _DECODERS[endpoint].decode(body)
    except msgspec.ValidationError as error:
        message, _, where = str(error).partition(" - at `$")
        param = where.rstrip("`").lstrip(".") or None
        if param is None and "missing required field" in message:
            param = message.rsplit("`", 2)[-2]
        return _raise(f"{message}{f' (at {param})' if param else ''}", param)
    except msgspec.DecodeError as error:
        return _raise(f"request body is not valid JSON: {error}", None)


def _raise(message: str, param: str | None) -> Any:
    raise BadRequest(message, param=param)


def with_fields(body: bytes, fields: dict[str, Any]) -> bytes:
    """The body with these top-level fields set; everything else kept as the client sent it."""
    if not fields:
        return body
    document = msgspec.json.decode(body)
    document.update(fields)
    return msgspec.json.encode(document)
