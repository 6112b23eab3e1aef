"""The app's routing, as the fuzzer of tests/router/http/test_fuzz.py found it wanting: requests
that never reach a backend, so the app is called in-process without its lifespan."""

from __future__ import annotations

import asyncio

import httpx

from triage_router.router.config_loader import parse_config
from triage_router.router.http.app import create_app

CONFIG = '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\nmodels = ["*"]\n'


def _call(method: str, path: str, **kwargs: object) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(parse_config(CONFIG)))
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(call())


def test_a_wrong_method_gets_405_with_the_allowed_ones() -> None:
    # RFC 9110: a 405 carries Allow. The relays answer it themselves, litestar the pages.
    relay = _call("PUT", "/v1/chat/completions")
    page = _call("DELETE", "/health")
    assert relay.status_code == 405 and relay.headers["allow"] == "POST"
    assert relay.json()["error"]["code"] == "method_not_allowed"
    assert page.status_code == 405 and "GET" in page.headers["allow"]
    assert page.json()["error"]["code"] == "method_not_allowed"


def test_a_post_to_a_page_is_a_405_not_a_relay() -> None:
    # POST /v1/models went to the passthrough relay, and so to a backend, by its body's model.
    answer = _call("POST", "/v1/models", json={"model": "m"})
    assert answer.status_code == 405 and "GET" in answer.headers["allow"]
