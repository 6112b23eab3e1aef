"""GET /openapi.json: a valid OpenAPI 3.1 document, describing every route the app mounts,
following the config, and matching what a live router in front of FakeUpstream really answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from litestar.routes import ASGIRoute, HTTPRoute
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream
from triage_router.router.http.explain import EXPLAIN_PREFIX
from triage_router.router.config_loader import parse_config
from triage_router.router.http.app import create_app
from triage_router.router.http.openapi import PASSTHROUGH_PATH, openapi_document

KEY = "sk-openapi"
AUTH = {"authorization": f"Bearer {KEY}"}
# Litestar answers these itself on every route; OpenAPI readers take them as given.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
CONFORMANCE = [status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]


def _config(fake: FakeUpstream, refusing: FakeUpstream, silent: FakeUpstream, *, extra: str = "") -> str:
    return (
        '[server]\nmax_body_bytes = 4096\nmax_headers = 40\n'
        f'[[backends]]\nname = "fake"\nkind = "engine"\nurl = "{fake.url}"\nmodels = ["smol"]\n'
        f'[[backends]]\nname = "refusing"\nurl = "{refusing.url}"\nmodels = ["broken"]\n'
        f'[[backends]]\nname = "silent"\nurl = "{silent.url}"\nmodels = ["slow"]\nfirst_byte_timeout_s = 0.3\n'
        f'[[api_keys]]\nkey = "{KEY}"\n'
        '[[api_keys]]\nkey = "sk-once"\nrequests_per_minute = 1\n' + extra
    )


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, schemathesis.BaseSchema]]:
    """A live router in front of a healthy, a refusing and a silent FakeUpstream, and its own
    /openapi.json as schemathesis reads it."""
    fakes = [FakeUpstream("fake").start(), FakeUpstream("refusing", mode="refuse").start(),
             FakeUpstream("silent", mode="hang").start()]
    try:
        with running_proxy(_config(*fakes)) as proxy:
            # Ready once every backend has answered something (a /metrics reading at least).
            deadline = time.monotonic() + 10
            while httpx.get(f"{proxy.url}/ready").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            yield proxy.url, schemathesis.openapi.from_url(f"{proxy.url}/openapi.json")
    finally:
        for fake in fakes:
            fake.stop()


def _document(config: str) -> dict[str, Any]:
    """What the app serves at /openapi.json (no lifespan: the document needs no backend)."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(parse_config(config)))
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            return await client.get("/openapi.json")

    answer = asyncio.run(get())
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    return answer.json()


def _plain_config(extra: str = "") -> str:
    return '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\nmodels = ["*"]\n' + extra


def test_the_document_is_valid_openapi_3_1(live: tuple[str, schemathesis.BaseSchema]) -> None:
    _, schema = live
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    assert schema.raw_schema["openapi"] == "3.1.0"
    # The meta-schema leaves the JSON Schemas inside alone: each must be valid 2020-12 itself.
    for name, body in schema.raw_schema["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(body), name


def test_every_mounted_route_is_described_and_nothing_else() -> None:
    app = create_app(parse_config(_plain_config()))
    mounted: dict[str, set[str]] = {PASSTHROUGH_PATH: {"post"}}  # TriageApp's, outside litestar
    for route in app.litestar.routes:
        if isinstance(route, ASGIRoute):  # a relay: POST, and 405 for anything else
            mounted[route.path] = {"post"}
        else:
            assert isinstance(route, HTTPRoute)
            mounted[route.path] = {method.lower() for method in route.methods - IMPLICIT_METHODS}
    mounted.update({EXPLAIN_PREFIX + path: {"post"} for path, relay in app.relays.items() if relay.generates})
    described = {path: set(item) for path, item in _document(_plain_config())["paths"].items()}
    assert described == mounted


def test_a_route_it_does_not_describe_stops_the_app() -> None:
    with pytest.raises(ValueError, match="GET /v1/files is mounted"):
        openapi_document(parse_config(_plain_config()), ["/v1/chat/completions"], ["/v1/files"])


def test_the_document_follows_the_config() -> None:
    open_proxy = _document(_plain_config())
    keyed = _document(_plain_config('[priority]\nheader = "x-urgency"\n[[api_keys]]\nkey = "k"\n'))
    chat, keyed_chat = open_proxy["paths"]["/v1/chat/completions"]["post"], keyed["paths"]["/v1/chat/completions"]["post"]
    assert "security" not in chat and "401" not in chat["responses"]
    assert keyed_chat["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}] and "401" in keyed_chat["responses"]
    assert open_proxy["components"]["parameters"]["Priority"]["name"] == "x-priority"
    assert keyed["components"]["parameters"]["Priority"]["name"] == "x-urgency"
    assert "security" not in keyed["paths"]["/v1/models"]["get"]  # pages need no key


def _conforms(schema: schemathesis.BaseSchema, answer: httpx.Response, status: int) -> None:
    """`answer` has `status`, and its status, content type, headers and body are as documented."""
    assert answer.status_code == status, answer.text
    path = answer.request.url.path
    operation = schema[path if path in schema.raw_schema["paths"] else PASSTHROUGH_PATH][answer.request.method]
    checks = CONFORMANCE if status >= 500 else [not_a_server_error, *CONFORMANCE]
    operation.Case().validate_response(answer, checks=checks)


CHAT = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
SUCCESSES = [
    ("/v1/chat/completions", CHAT),
    ("/v1/chat/completions", {**CHAT, "stream": True, "max_tokens": 5}),
    ("/v1/completions", {"model": "smol", "prompt": "hi"}),
    ("/v1/completions", {"model": "smol", "prompt": ["hi"], "stream": True}),
    ("/v1/embeddings", {"model": "smol", "input": ["a", "b"]}),
    ("/tokenize", {"model": "smol", "prompt": "two words"}),
    ("/detokenize", {"model": "smol", "tokens": [1, 2]}),
    ("/v1/responses", {"model": "smol", "input": "hi"}),
    ("/v1/responses", {"model": "smol", "input": [{"role": "user", "content": "hi"}], "stream": True}),
    ("/v1/messages", {"model": "smol", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/messages", {"model": "smol", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/rerank", {"model": "smol", "query": "q", "documents": ["a"]}),
]


@pytest.mark.parametrize(("path", "body"), SUCCESSES, ids=[f"{p} {'stream' if b.get('stream') else ''}" for p, b in SUCCESSES])
def test_real_answers_conform(live: tuple[str, schemathesis.BaseSchema], path: str, body: dict[str, Any]) -> None:
    url, schema = live
    answer = httpx.post(url + path, json=body, headers={**AUTH, "x-priority": "1"})
    _conforms(schema, answer, 200)
    if body.get("stream"):
        assert answer.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize("path", ["/v1/models", "/health", "/ready", "/metrics", "/openapi.json"])
def test_the_pages_conform(live: tuple[str, schemathesis.BaseSchema], path: str) -> None:
    url, schema = live
    _conforms(schema, httpx.get(url + path), 200)


ERRORS = [
    (400, "/v1/chat/completions", {"model": "smol"}, {}),  # no messages
    (400, "/v1/chat/completions", CHAT, {"x-priority": "9"}),
    (400, "/v1/messages", {"model": "smol", "max_tokens": 5, "messages": []}, {}),  # in Anthropic's shape
    (404, "/v1/embeddings", {"model": "nobody-serves-it", "input": "a"}, {}),
    (413, "/v1/completions", {"model": "smol", "prompt": "x" * 5000}, {}),
    (431, "/v1/chat/completions", CHAT, {f"x-filler-{i}": "1" for i in range(50)}),
    (502, "/v1/chat/completions", {**CHAT, "model": "broken"}, {}),
    (504, "/v1/chat/completions", {**CHAT, "model": "slow"}, {}),
]


@pytest.mark.parametrize(("status", "path", "body", "headers"), ERRORS, ids=[f"{s} {p}" for s, p, _, _ in ERRORS])
def test_the_routers_own_errors_conform(live: tuple[str, schemathesis.BaseSchema], status: int, path: str,
                                        body: dict[str, Any], headers: dict[str, str]) -> None:
    url, schema = live
    _conforms(schema, httpx.post(url + path, json=body, headers={**AUTH, **headers}, timeout=10), status)


def test_a_missing_key_and_a_rate_limit_conform(live: tuple[str, schemathesis.BaseSchema]) -> None:
    url, schema = live
    _conforms(schema, httpx.post(f"{url}/v1/chat/completions", json=CHAT), 401)
    once = {"authorization": "Bearer sk-once"}
    _conforms(schema, httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=once), 200)
    limited = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=once)
    _conforms(schema, limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
