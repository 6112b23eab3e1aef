"""JSON Schemas of what Triage answers, for /openapi.json (router/http/openapi.py): relayed
answers, their Server-Sent Events, errors, and the router's own pages.

A relayed answer is the backend's (or, for Responses and Messages over a chat-only backend,
router/translation/'s), so these list the fields OpenAI's, Anthropic's and vLLM's answers always
carry and allow any other.

An event stream's schema describes one event, as OpenAPI 3.1 readers (schemathesis among them)
take it: an object with the event's `data` (and `event`, when named), the data's JSON described by
`contentSchema`.
"""

from __future__ import annotations

from triage_router.router.http.openapi_requests import (ANY_OBJECT, INTEGER, NUMBER, STRING, Schema, array, nullable,
                                                        obj, ref)

_ERROR_CODE = nullable({"anyOf": [STRING, INTEGER]})
ERROR = obj(
    ("error",),
    "OpenAI's error envelope. The router's own errors have a string or null `code`; a backend's error "
    "is relayed as it sent it (vLLM puts the status there, as an integer).",
    error=obj(("message", "type"), message=STRING, type=STRING, param=nullable(STRING), code=_ERROR_CODE),
)
ANTHROPIC_ERROR = obj(("type", "error"), "Anthropic's error shape, for /v1/messages.", type={"const": "error"},
                      error=obj(("type", "message"), type=STRING, message=STRING))

_USAGE = obj(("prompt_tokens", "total_tokens"), prompt_tokens=INTEGER, completion_tokens=INTEGER,
             total_tokens=INTEGER)
_TOOL_CALLS = array(obj(("id", "type", "function"), id=STRING, type=STRING,
                        function=obj(("name", "arguments"), name=STRING, arguments=STRING)))
_ANSWER_HEAD: dict[str, Schema] = {"id": STRING, "created": INTEGER, "model": STRING, "usage": nullable(_USAGE)}
CHAT_COMPLETION = obj(
    ("id", "object", "created", "model", "choices"),
    object={"const": "chat.completion"}, choices=array(obj(
        ("index", "message", "finish_reason"), index=INTEGER, finish_reason=nullable(STRING),
        logprobs=nullable(ANY_OBJECT),
        message=obj(("role",), role=STRING, content=nullable(STRING), tool_calls=nullable(_TOOL_CALLS)))),
    **_ANSWER_HEAD,
)
CHAT_COMPLETION_CHUNK = obj(
    ("id", "object", "created", "model", "choices"),
    "One streamed piece; with `stream_options.include_usage`, a last one with no choices and the usage.",
    object={"const": "chat.completion.chunk"}, choices=array(obj(
        ("index", "delta"), index=INTEGER, finish_reason=nullable(STRING), logprobs=nullable(ANY_OBJECT),
        delta=obj(role=STRING, content=nullable(STRING), tool_calls=array(ANY_OBJECT)))),
    **_ANSWER_HEAD,
)
COMPLETION = obj(
    ("id", "object", "created", "model", "choices"),
    "A legacy completion; streamed, each event is one of these with the text so far's next piece.",
    object={"const": "text_completion"}, choices=array(obj(
        ("index", "text"), index=INTEGER, text=STRING, finish_reason=nullable(STRING), logprobs=nullable(ANY_OBJECT))),
    **_ANSWER_HEAD,
)
EMBEDDING_LIST = obj(
    ("object", "data", "model"),
    object={"const": "list"}, model=STRING, usage=_USAGE,
    data=array(obj(("object", "index", "embedding"), object={"const": "embedding"}, index=INTEGER,
                   embedding={"anyOf": [array(NUMBER), STRING]})),
)
TOKENIZE_ANSWER = obj(("count", "tokens"), count=INTEGER, max_model_len=INTEGER, tokens=array(INTEGER),
                      token_strs=nullable(array(STRING)))
DETOKENIZE_ANSWER = obj(("prompt",), prompt=STRING)
RESPONSE = obj(
    ("id", "object", "created_at", "status", "model", "output"),
    "A Responses API response object.",
    id=STRING, object={"const": "response"}, created_at=NUMBER, model=STRING, error=nullable(ANY_OBJECT),
    status={"enum": ["completed", "incomplete", "failed", "in_progress", "queued", "cancelled"]},
    output=array(obj(("type",), type=STRING, id=STRING)), usage=nullable(ANY_OBJECT),
)
MESSAGE = obj(
    ("id", "type", "role", "content", "model", "stop_reason", "usage"),
    "An Anthropic Messages answer.",
    id=STRING, type={"const": "message"}, role={"const": "assistant"}, model=STRING,
    content=array(obj(("type",), type=STRING)), stop_reason=nullable(STRING), stop_sequence=nullable(STRING),
    usage=obj(("input_tokens", "output_tokens"), input_tokens=INTEGER, output_tokens=INTEGER),
)
RESPONSES_EVENT = obj(("type", "sequence_number"), type=STRING, sequence_number=INTEGER)
MESSAGES_EVENT = obj(("type",), type={"enum": ["message_start", "content_block_start", "content_block_delta",
                                               "content_block_stop", "message_delta", "message_stop", "ping", "error"]})

MODEL_LIST = obj(("object", "data"), object={"const": "list"}, data=array(obj(
    ("id", "object"), id=STRING, object={"const": "model"}, created=INTEGER, owned_by=STRING)))
HEALTH = obj(
    ("status", "backends"),
    "Liveness: answered while the process runs, whatever the backends' state.",
    status={"enum": ["ok", "degraded"]}, backends={"type": "object", "additionalProperties": {"enum": ["up", "down"]}},
    tagging={"type": "object", "additionalProperties": {"enum": ["ready", "starting"]}},
)
READINESS = obj(("status",), status={"enum": ["ready", "not ready"]}, no_healthy_backend_for=array(STRING))
OPENAPI_DOCUMENT = obj(("openapi", "info", "paths"), "This document.", openapi=STRING, info=ANY_OBJECT,
                       paths=ANY_OBJECT)


def _json_data(schema: Schema) -> Schema:
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def openai_event(chunk: str) -> Schema:
    """A `data:` event of an OpenAI stream: a chunk, an error that broke the stream, or `[DONE]`."""
    data = {"anyOf": [{"const": "[DONE]"}, _json_data({"anyOf": [ref(chunk), ref("Error")]})]}
    return obj(("data",), data=data)


def named_event(payload: str) -> Schema:
    """An event of the Responses or Messages stream: its name, and its data's `type` says it again."""
    return obj(("event", "data"), event=STRING, data=_json_data(ref(payload)))


ANSWER_SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "AnthropicError": ANTHROPIC_ERROR,
    "ChatCompletion": CHAT_COMPLETION,
    "ChatCompletionChunk": CHAT_COMPLETION_CHUNK,
    "Completion": COMPLETION,
    "EmbeddingList": EMBEDDING_LIST,
    "TokenizeAnswer": TOKENIZE_ANSWER,
    "DetokenizeAnswer": DETOKENIZE_ANSWER,
    "Response": RESPONSE,
    "ResponsesEvent": RESPONSES_EVENT,
    "Message": MESSAGE,
    "MessagesEvent": MESSAGES_EVENT,
    "ModelList": MODEL_LIST,
    "Health": HEALTH,
    "Readiness": READINESS,
    "OpenApiDocument": OPENAPI_DOCUMENT,
}
