"""GET /openapi.json: an OpenAPI 3.1 document of every route the router answers, as vLLM serves
one for its own.

The relay routes are raw ASGI handlers (router/http/proxy.py), which litestar's own schema
generation cannot see, so app.py turns that off and this module describes every route by hand:
the relays' bodies and answers (openapi_requests.py, openapi_answers.py), the headers Triage
reads, its API keys, and the errors it answers itself. The document follows the config (header
names, whether keys are required) and the routes the app mounts: a mounted path this module does
not describe stops the app at start-up. It is built once; serving it costs nothing per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import msgspec

from triage_router.router.config import Config
from triage_router.router.http.explain import EXPLAIN_PREFIX
from triage_router.router.http.openapi_answers import ANSWER_SCHEMAS, named_event, openai_event
from triage_router.router.http.openapi_requests import INTEGER, REQUEST_SCHEMAS, STRING, Schema, ref

# Any other POST under /v1/ is relayed by its body's model (router/http/app.py).
PASSTHROUGH_PATH = "/v1/{endpoint}"
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class _Relay:
    operation_id: str
    summary: str
    request: str  # the JSON body's schema, by its name under components/schemas
    answer: str | None  # the JSON answer's; None: whatever the backend answers, of any type
    event: Schema | None = None  # one event of the answer streamed with `stream: true`
    error: str = "Error"
    form: str | None = None  # a multipart/form-data body's schema, where one is taken


RELAYS: dict[str, _Relay] = {
    "/v1/chat/completions": _Relay("createChatCompletion", "Chat completion", "ChatCompletionRequest",
                                   "ChatCompletion", openai_event("ChatCompletionChunk")),
    "/v1/completions": _Relay("createCompletion", "Completion (legacy)", "CompletionRequest", "Completion",
                              openai_event("Completion")),
    "/v1/embeddings": _Relay("createEmbedding", "Embeddings", "EmbeddingRequest", "EmbeddingList"),
    "/v1/responses": _Relay("createResponse", "OpenAI Responses, stateless", "ResponsesRequest", "Response",
                            named_event("ResponsesEvent")),
    "/v1/messages": _Relay("createMessage", "Anthropic Messages", "MessagesRequest", "Message",
                           named_event("MessagesEvent"), error="AnthropicError"),
    "/tokenize": _Relay("tokenize", "vLLM's tokenizer", "TokenizeRequest", "TokenizeAnswer"),
    "/detokenize": _Relay("detokenize", "vLLM's detokenizer", "DetokenizeRequest", "DetokenizeAnswer"),
}
_PASSTHROUGH = _Relay("relay", "Any other POST under /v1/, relayed unchanged", "PassthroughRequest", None,
                      form="PassthroughForm")


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": ref(schema)}}}


PAGES: dict[str, dict[str, Any]] = {
    "/v1/models": {"operationId": "listModels", "summary": "Models any backend serves, and configured names",
                   "responses": {"200": _json("ModelList", "Every model once.")}},
    "/health": {"operationId": "health", "summary": "Liveness, and each backend's state",
                "responses": {"200": _json("Health", "The router answers.")}},
    "/ready": {"operationId": "ready", "summary": "Readiness, for a load balancer",
               "responses": {"200": _json("Readiness", "A healthy backend serves every configured model."),
                             "503": _json("Readiness", "Some configured model has no healthy backend.")}},
    "/metrics": {"operationId": "metrics", "summary": "Prometheus metrics (docs/metrics.md)",
                 "responses": {"200": {"description": "Prometheus text format 0.0.4.",
                                       "content": {"text/plain": {"schema": STRING}}}}},
    "/openapi.json": {"operationId": "openapi", "summary": "This document",
                      "responses": {"200": _json("OpenApiDocument", "OpenAPI 3.1.")}},
    "/status": {"operationId": "status", "summary": "Queues, backends and the last decisions (docs/metrics.md)",
                "responses": {"200": {"description": "The router's state now.",
                                      "content": {_JSON: {"schema": {"type": "object"}}}}}},
    "/dashboard": {"operationId": "dashboard", "summary": "A live status page that polls /status",
                   "responses": {"200": {"description": "One HTML page, no external asset.",
                                         "content": {"text/html": {"schema": STRING}}}}},
}

# The statuses the router answers itself (router/errors.py), on every relay route. A backend's
# own error is relayed with its status and body.
_ERRORS: dict[int, str] = {
    400: "The body is not JSON or lacks what routing needs (`model`, `messages`, ...), the priority header "
         "is not a digit 0-4, or the backend refused the request.",
    401: "No API key, or an unknown one.",
    404: "No backend serves the model, or the backend does not serve the path.",
    408: "The request waited in the admission queue past its priority's timeout, or its body did not "
         "arrive within `server.body_deadline_s`.",
    413: "The body is larger than `server.max_body_bytes`.",
    429: "The admission queue is full, or the API key has used up its requests or tokens per minute.",
    431: "More request headers, or more bytes of them, than `server.max_headers` and `server.max_header_bytes`.",
    500: "The backend's own error, relayed.",
    502: "The backend refused or broke the connection, on every backend tried, or answered 502 itself.",
    503: "No healthy backend serves the model, this request was displaced from the admission queue by "
         "more urgent work, or the backend answered 503 itself.",
    504: "The backend did not answer in time, or answered 504 itself.",
}
_PASSTHROUGH_ONLY = {405: "The path is one of the router's own GET routes."}

_RETRY_AFTER = {"description": "Seconds to wait: always on a refusal by the admission queue or a key's rate "
                               "limit, absent on a backend's own 429 or 503.", "schema": INTEGER}
_ALLOW = {"description": "The methods the path supports.", "required": True, "schema": STRING}
_HEADERS: dict[str, dict[str, Any]] = {
    "x-request-id": {"description": "The client's own, else a new one; sent upstream too.", "required": True,
                     "schema": STRING},
    "x-triage-priority": {"description": "The priority the request ran at, 0 (most urgent) to 4.",
                          "required": True, "schema": {"type": "integer", "minimum": 0, "maximum": 4}},
    "x-triage-priority-source": {"description": "What decided it: `header`, `rule:<name>`, `llm`, `embedding` "
                                                "or `default`.", "required": True, "schema": STRING},
    "x-triage-backend": {"description": "The backend that answered.", "required": True, "schema": STRING},
    "x-triage-priority-clamped-from": {"description": "The more urgent priority asked for, beyond what the "
                                                      "caller may claim.", "schema": INTEGER},
    "x-triage-priority-adjusted-by": {"description": "The rules that raised or lowered it.", "schema": STRING},
    "x-triage-predicted-tokens": {"description": "Predicted output tokens (median).", "schema": INTEGER},
    "x-triage-predicted-tokens-high": {"description": "Predicted output tokens (high quantile).", "schema": INTEGER},
    "x-triage-placement": {"description": "Why this backend, with `x-triage-debug`.", "schema": STRING},
}


def _parameters(config: Config) -> dict[str, dict[str, Any]]:
    """The request headers Triage reads, under the names the config gives them."""
    headers = {
        "Priority": (config.priority.header, {"type": "integer", "minimum": 0, "maximum": 4},
                     f"0 (most urgent) to 4. Without an API key, capped at {config.priority.anonymous_max_priority}; "
                     "with one, at its `max_priority`. Absent: rules, taggers, then the default "
                     f"({config.priority.default})."),
        "RequestId": ("x-request-id", STRING, "Kept as the request's id: answered back and sent upstream."),
        "Session": (config.routing.session_header, STRING, "Requests of one session go to one backend."),
        "Tenant": (config.admission.tenant_header, STRING,
                   "Who the request belongs to, for fair share and rules, when it has no API key."),
        "Debug": ("x-triage-debug", STRING, "Any value: the answer explains its placement in `x-triage-placement`."),
    }
    return {key: {"name": name, "in": "header", "required": False, "schema": schema, "description": description}
            for key, (name, schema, description) in headers.items() if name}


def _error_responses(shape: str, statuses: dict[int, str]) -> dict[str, dict[str, Any]]:
    responses = {}
    for status, description in statuses.items():
        # A 405 comes from litestar, before any request id: it lists the methods instead.
        headers: dict[str, Any] = {"allow": _ALLOW} if status == 405 else {"x-request-id": _HEADERS["x-request-id"]}
        if status in (429, 503):
            headers["retry-after"] = _RETRY_AFTER
        if status == 429:
            headers.update({f"x-ratelimit-{part}-{kind}": {"schema": STRING, "description": f"A key's {kind} limit."}
                            for part in ("limit", "remaining", "reset") for kind in ("requests", "tokens")})
        responses[f"{shape}{status}"] = {"description": description, "headers": headers,
                                         "content": {_JSON: {"schema": ref(shape)}}}
    return responses


def _relay_operation(relay: _Relay, parameters: list[str], keys: bool, statuses: Iterable[int]) -> dict[str, Any]:
    body: dict[str, Any] = {_JSON: {"schema": ref(relay.request)}}
    if relay.form is not None:
        body["multipart/form-data"] = {"schema": ref(relay.form)}
    answer: dict[str, Any] = {_JSON: {"schema": ref(relay.answer)}} if relay.answer is not None else {"*/*": {}}
    if relay.event is not None:
        answer["text/event-stream"] = {"schema": relay.event}
    operation: dict[str, Any] = {
        "operationId": relay.operation_id,
        "summary": relay.summary,
        "tags": ["relay"],
        "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in parameters],
        "requestBody": {"required": True, "content": body},
        "responses": {
            "200": {"description": "The backend's answer" + (", streamed with `stream: true`" if relay.event else ""),
                    "headers": _HEADERS, "content": answer},
            **{str(status): {"$ref": f"#/components/responses/{relay.error}{status}"}
               for status in statuses if keys or status != 401},
        },
    }
    if keys:
        operation["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return operation


def _explain_operation(relay: _Relay, parameters: list[str], keys: bool) -> dict[str, Any]:
    """The relay's request, answered with the decision instead of sent (router/http/explain.py)."""
    operation = _relay_operation(relay, parameters, keys, _ERRORS)
    operation.update(operationId="explain_" + relay.operation_id, tags=["router"],
                     summary="What Triage would decide for this request, without sending it (`triage explain`)")
    operation["responses"]["200"] = {
        "description": "The priority and its source, the predicted length, each backend's score and what it "
                       "holds of the prompt (by its KV events, or the approximate index), the placement.",
        "content": {_JSON: {"schema": {"type": "object", "required": ["priority", "placement", "candidates"]}}}}
    return operation


def _passthrough(parameters: list[str], keys: bool) -> dict[str, Any]:
    operation = _relay_operation(_PASSTHROUGH, parameters, keys, [*_ERRORS, *_PASSTHROUGH_ONLY])
    operation["description"] = ("Rerank, score, audio...: routed by the body's `model` (a multipart form's "
                                 "`model` field) and forwarded unchanged, to deeper paths such as "
                                 "/v1/audio/transcriptions too.")
    # One segment, other than the routes described on their own paths.
    taken = [path.removeprefix("/v1/") for path in [*RELAYS, *PAGES]
             if path.startswith("/v1/") and path.count("/") == 2]
    operation["parameters"].append({"name": "endpoint", "in": "path", "required": True, "schema": {
        "type": "string", "pattern": "^[a-z0-9_-]+$", "not": {"enum": taken}}})
    return operation


def openapi_document(config: Config, relay_paths: Iterable[str], page_paths: Iterable[str],
                     explain_paths: Iterable[str] = ()) -> dict[str, Any]:
    """The document for the mounted relay (POST), page (GET) and explain (POST) paths."""
    keys = bool(config.api_keys)
    parameters = _parameters(config)
    paths: dict[str, Any] = {}
    for path in relay_paths:
        if path not in RELAYS:
            raise ValueError(f"POST {path} is mounted, but router/http/openapi.py does not describe it")
        paths[path] = {"post": _relay_operation(RELAYS[path], list(parameters), keys, _ERRORS)}
    for path in page_paths:
        if path not in PAGES:
            raise ValueError(f"GET {path} is mounted, but router/http/openapi.py does not describe it")
        paths[path] = {"get": {**PAGES[path], "tags": ["router"]}}
    paths[PASSTHROUGH_PATH] = {"post": _passthrough(list(parameters), keys)}
    for path in explain_paths:
        paths[path] = {"post": _explain_operation(RELAYS[path.removeprefix(EXPLAIN_PREFIX)], list(parameters), keys)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Triage", "version": _version(), "description": (
            "An OpenAI-compatible router. A relay route takes Triage's priority headers and answers with the "
            "backend's status and body, or with an error of the router's own (docs/api.md).")},
        "tags": [{"name": "relay", "description": "Scheduled and relayed to a backend that serves the model."},
                 {"name": "router", "description": "Answered by the router itself."}],
        "paths": paths,
        "components": {
            "schemas": {**REQUEST_SCHEMAS, **ANSWER_SCHEMAS},
            "parameters": parameters,
            "responses": {**_error_responses("Error", {**_ERRORS, **_PASSTHROUGH_ONLY}),
                          **_error_responses("AnthropicError", _ERRORS)},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "A key from `[[api_keys]]`."},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                                 "description": "The same key, as Anthropic's clients send it."},
            },
        },
    }


def openapi_json(config: Config, relay_paths: Iterable[str], page_paths: Iterable[str],
                 explain_paths: Iterable[str] = ()) -> bytes:
    return msgspec.json.encode(openapi_document(config, relay_paths, page_paths, explain_paths))


def _version() -> str:
    try:
        return metadata.version("triage-router")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
