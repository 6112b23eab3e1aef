"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the request bodies Triage relays, for
/openapi.json (router/http/openapi.py).

Close to OpenAI's, Anthropic's and vLLM's published shapes, but permissive: every object allows
fields it does not list, since backends accept many more (vLLM's sampling extensions: top_k,
repetition_penalty, ...) and Triage forwards them untouched. Triage itself validates only what
it routes by (router/api_types.py); the backend validates the rest.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: tuple[str, ...] = (), about: str = "", /, **properties: Schema) -> Schema:
    """An object with these properties, open to any other field. Positional-only, so that a
    property may be called `description` or `required`."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": True}
    if required:
        schema["required"] = list(required)
    if about:
        schema["description"] = about
    return schema


def array(items: Schema, **bounds: int) -> Schema:
    return {"type": "array", "items": items, **bounds}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}


def _number(minimum: float, maximum: float) -> Schema:
    return nullable({"type": "number", "minimum": minimum, "maximum": maximum})


_MODEL = {"type": "string", "description": "Routes the request: to the backends that serve this model."}
_STREAM = {"type": "boolean", "default": False, "description": "Answer with Server-Sent Events."}
_STOP = nullable({"anyOf": [STRING, array(STRING, maxItems=4)]})
_SAMPLING: dict[str, Schema] = {
    "temperature": _number(0, 2), "top_p": _number(0, 1), "n": nullable({"type": "integer", "minimum": 1}),
    "stop": _STOP, "seed": nullable(INTEGER), "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2), "user": STRING,
    "stream_options": nullable(obj(include_usage=BOOLEAN)),
}
_FUNCTION_TOOL = obj(("type", "function"), type={"const": "function"}, function=obj(
    ("name",), name=STRING, description=STRING, parameters=ANY_OBJECT, strict=nullable(BOOLEAN)))
_TOOL_CALL = obj(("id", "type", "function"), id=STRING, type={"const": "function"},
                 function=obj(("name", "arguments"), name=STRING, arguments=STRING))
_CONTENT_PART = obj(("type",), type={"type": "string", "examples": ["text", "image_url", "input_audio", "file"]},
                    text=STRING, image_url=obj(("url",), url=STRING, detail=STRING))

CHAT_MESSAGE = obj(
    ("role",),
    "One turn. vLLM accepts roles beyond OpenAI's, so the role is not restricted.",
    role={"type": "string", "examples": ["system", "developer", "user", "assistant", "tool"]},
    content=nullable({"anyOf": [STRING, array(_CONTENT_PART)]}),
    name=STRING, tool_calls=array(_TOOL_CALL), tool_call_id=STRING,
)
CHAT_COMPLETION_REQUEST = obj(
    ("model", "messages"),
    model=_MODEL, messages=array(ref("ChatMessage"), minItems=1), stream=_STREAM,
    max_tokens=nullable({"type": "integer", "minimum": 1}),
    max_completion_tokens=nullable({"type": "integer", "minimum": 1}),
    logprobs=nullable(BOOLEAN), top_logprobs=nullable({"type": "integer", "minimum": 0, "maximum": 20}),
    logit_bias=nullable({"type": "object", "additionalProperties": NUMBER}),
    tools=array(_FUNCTION_TOOL),
    tool_choice={"anyOf": [{"enum": ["none", "auto", "required"]}, obj(
        ("type", "function"), type={"const": "function"}, function=obj(("name",), name=STRING))]},
    parallel_tool_calls=BOOLEAN,
    response_format=obj(("type",), type={"type": "string", "examples": ["text", "json_object", "json_schema"]},
                        json_schema=ANY_OBJECT),
    **_SAMPLING,
)
_TOKENS = array(INTEGER)
_PROMPT = {"anyOf": [STRING, array(STRING, minItems=1), array(INTEGER, minItems=1), array(_TOKENS, minItems=1)]}
COMPLETION_REQUEST = obj(
    ("model", "prompt"),
    model=_MODEL, prompt=_PROMPT, stream=_STREAM, max_tokens=nullable({"type": "integer", "minimum": 1}),
    echo=nullable(BOOLEAN), suffix=nullable(STRING), logprobs=nullable({"type": "integer", "minimum": 0, "maximum": 5}),
    best_of=nullable({"type": "integer", "minimum": 1}), **_SAMPLING,
)
EMBEDDING_REQUEST = obj(
    ("model", "input"),
    model=_MODEL, input=_PROMPT, encoding_format={"enum": ["float", "base64"]},
    dimensions={"type": "integer", "minimum": 1}, user=STRING,
)
TOKENIZE_REQUEST = obj(
    ("model",),
    "vLLM's: a `prompt`, or chat `messages` rendered with the model's template.",
    model=_MODEL, prompt=STRING, messages=array(ref("ChatMessage")), add_special_tokens=BOOLEAN,
    add_generation_prompt=BOOLEAN, return_token_strs=nullable(BOOLEAN),
)
DETOKENIZE_REQUEST = obj(("model", "tokens"), model=_MODEL, tokens=_TOKENS)
PASSTHROUGH_REQUEST = obj(("model",), "Forwarded unchanged; only `model` is read, to route it.", model=_MODEL)
PASSTHROUGH_FORM = obj(
    ("model",), "A multipart form (audio uploads): only the `model` field is read, to route it.",
    model=_MODEL, file={"type": "string", "contentMediaType": "application/octet-stream"},
)

_RESPONSES_CONTENT = {"anyOf": [STRING, array(obj(
    ("type",), type={"enum": ["input_text", "output_text", "text", "input_image"]}, text=STRING, image_url=STRING))]}
_RESPONSES_ITEM = obj(
    (),
    "A message (the default `type`), a function call, or a function call's output.",
    type={"enum": ["message", "function_call", "function_call_output"]},
    role={"enum": ["user", "assistant", "system", "developer"]}, content=_RESPONSES_CONTENT,
    call_id=STRING, name=STRING, arguments=STRING, output=STRING,
)
RESPONSES_REQUEST = obj(
    ("model", "input"),
    "OpenAI's Responses API, stateless: `previous_response_id` and `store: true` are refused (400).",
    model=_MODEL, input={"anyOf": [STRING, array(_RESPONSES_ITEM, minItems=1)]}, instructions=nullable(STRING),
    max_output_tokens=nullable({"type": "integer", "minimum": 1}), temperature=_number(0, 2), top_p=_number(0, 1),
    stream=_STREAM, tools=array(obj(("type", "name"), type={"const": "function"}, name=STRING,
                                    description=nullable(STRING), parameters=ANY_OBJECT, strict=nullable(BOOLEAN))),
    tool_choice={"anyOf": [{"enum": ["none", "auto", "required"]},
                           obj(("type", "name"), type={"const": "function"}, name=STRING)]},
    parallel_tool_calls=nullable(BOOLEAN), metadata=nullable({"type": "object", "additionalProperties": STRING}),
    store={"const": False}, previous_response_id={"type": "null"}, user=STRING,
    text=ANY_OBJECT, reasoning=nullable(ANY_OBJECT),
)

_MESSAGES_BLOCK = obj(
    ("type",),
    "Text, a base64 image, a tool call (assistant turns) or a tool's result (user turns).",
    type={"enum": ["text", "image", "tool_use", "tool_result"]}, text=STRING,
    source=obj(("type", "media_type", "data"), type={"const": "base64"}, media_type=STRING, data=STRING),
    id=STRING, name=STRING, input=ANY_OBJECT, tool_use_id=STRING,
    content={"anyOf": [STRING, array(obj(("type",), type=STRING, text=STRING))]},
)
MESSAGES_REQUEST = obj(
    ("model", "max_tokens", "messages"),
    "Anthropic's Messages API.",
    model=_MODEL, max_tokens={"type": "integer", "minimum": 1},
    messages=array(obj(("role", "content"), role={"enum": ["user", "assistant"]},
                       content={"anyOf": [STRING, array(_MESSAGES_BLOCK)]}), minItems=1),
    system={"anyOf": [STRING, array(obj(("type", "text"), type={"const": "text"}, text=STRING))]},
    stop_sequences=array(STRING), temperature={"type": "number", "minimum": 0, "maximum": 1},
    top_p={"type": "number", "minimum": 0, "maximum": 1}, top_k={"type": "integer", "minimum": 0}, stream=_STREAM,
    metadata=obj(user_id=nullable(STRING)),
    tools=array(obj(("name", "input_schema"), name=STRING, description=STRING, input_schema=ANY_OBJECT)),
    tool_choice=obj(("type",), type={"enum": ["auto", "any", "tool", "none"]}, name=STRING),
)

REQUEST_SCHEMAS: dict[str, Schema] = {
    "ChatMessage": CHAT_MESSAGE,
    "ChatCompletionRequest": CHAT_COMPLETION_REQUEST,
    "CompletionRequest": COMPLETION_REQUEST,
    "EmbeddingRequest": EMBEDDING_REQUEST,
    "TokenizeRequest": TOKENIZE_REQUEST,
    "DetokenizeRequest": DETOKENIZE_REQUEST,
    "ResponsesRequest": RESPONSES_REQUEST,
    "MessagesRequest": MESSAGES_REQUEST,
    "PassthroughRequest": PASSTHROUGH_REQUEST,
    "PassthroughForm": PASSTHROUGH_FORM,
}
