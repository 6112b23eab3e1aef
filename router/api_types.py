"""The parts of OpenAI request bodies that Triage reads.

Only what routing needs is decoded; every other field stays in the original bytes, which are
forwarded untouched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from triage_router.router.errors import BadRequest

# chat and completions generate (priority, prediction, cache affinity); embeddings get priority
# and admission only; passthrough is any other path, forwarded unchanged.
# responses and messages are translated to chat (router/http/translated.py) for routing.
Endpoint = Literal["chat", "completions", "embeddings", "passthrough", "responses", "messages"]
GENERATING: frozenset[str] = frozenset({"chat", "completions", "responses", "messages"})


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
    # Keys a client already sends that keep its conversation on one backend (router/routing/session.py).
    prompt_cache_key: str | None = None
    user: str | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(msgspec.Struct):
    model: str
    prompt: str | list[Any]
    stream: bool = False
    max_tokens: int | None = None
    prompt_cache_key: str | None = None
    user: str | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(msgspec.Struct):
    model: str
    input: str | list[Any]
    stream: bool = False
    output_limit: None = None


class PassthroughRequest(msgspec.Struct):
    """Any other endpoint: only the model is read, to route it; `stream` to time it."""

    model: str
    stream: bool = False
    output_limit: None = None


AnyRequest = ChatCompletionRequest | CompletionRequest | EmbeddingRequest | PassthroughRequest

_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "chat": msgspec.json.Decoder(ChatCompletionRequest),
    "completions": msgspec.json.Decoder(CompletionRequest),
    "embeddings": msgspec.json.Decoder(EmbeddingRequest),
    "passthrough": msgspec.json.Decoder(PassthroughRequest),
}


def decode_request(endpoint: Endpoint, body: bytes, content_type: str = "application/json") -> AnyRequest:
    """Validate a body; a problem becomes a 400 naming the offending field. A multipart form
    (audio uploads) is read for its `model` field only."""
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    if endpoint == "passthrough" and content_type.startswith("multipart/form-data"):
        return PassthroughRequest(model=form_field(body, content_type, "model"))
    try:
        # msgspec checks only the strings it decodes; the rest is forwarded, so check it all.
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return _raise(f"request body is not valid JSON: Invalid UTF-8 at byte {error.start}", None)
    try:
        return _DECODERS[endpoint].decode(body)
    except msgspec.ValidationError as error:
        raise _bad_request(error) from None
    except msgspec.DecodeError as error:
        return _raise(f"request body is not valid JSON: {error}", None)


def check_shape(document: Any, shape: type[msgspec.Struct]) -> None:
    """Check a decoded body against a Struct of the fields about to be read (router/translation/):
    a field of the wrong type is a 400 naming it, not an exception where it is read."""
    try:
        msgspec.convert(document, shape)
    except msgspec.ValidationError as error:
        raise _bad_request(error) from None


def _bad_request(error: msgspec.ValidationError) -> BadRequest:
    message, _, where = str(error).partition(" - at `$")
    param = where.rstrip("`").lstrip(".") or None
    if param is None and "missing required field" in message:
        param = message.rsplit("`", 2)[-2]
    return BadRequest(f"{message}{f' (at {param})' if param else ''}", param=param)


def _raise(message: str, param: str | None) -> Any:
    raise BadRequest(message, param=param)


def form_field(body: bytes, content_type: str, name: str) -> str:
    """The value of a small text field of a multipart/form-data body (RFC 7578)."""
    _, _, boundary = content_type.partition("boundary=")
    boundary = boundary.split(";")[0].strip().strip('"')
    if not boundary:
        raise BadRequest("multipart body without a boundary in its content-type")
    wanted = f'name="{name}"'.encode()
    for part in body.split(b"--" + boundary.encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        if sep and wanted in head and b"filename=" not in head:
            return value.rstrip(b"\r\n").decode("utf-8", "replace")
    raise BadRequest(f"the form has no `{name}` field", param=name)


def with_fields(body: bytes, fields: dict[str, Any]) -> bytes:
    """The body with these top-level fields set; everything else kept as the client sent it."""
    if not fields:
        return body
    document = msgspec.json.decode(body)
    document.update(fields)
    return msgspec.json.encode(document)
