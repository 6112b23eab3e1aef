"""The official OpenAI SDK, sync and async, through a live proxy in front of a live upstream."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream


def _config(*upstreams: FakeUpstream, extra: str = "") -> str:
    backends = "".join(
        f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\nmodels = ["smol"]\napi_key = "sk-upstream-{u.name}"\n'
        for u in upstreams
    )
    return backends + extra


def test_chat_non_streaming_passes_content_usage_and_unknown_fields(upstream: FakeUpstream) -> None:
    with running_proxy(_config(upstream)) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="smol",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"client_extra": {"nested": [1, 2]}},
            extra_headers={"x-priority": "3", "x-request-id": "req-42"},
        )
        completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from alpha"
    assert completion.usage is not None and completion.usage.total_tokens == 10
    assert completion.model_extra["upstream_extra"] == {"served_by": "alpha"}
    assert raw.headers["x-triage-priority"] == "3"
    assert raw.headers["x-triage-priority-source"] == "header"
    assert raw.headers["x-triage-backend"] == "alpha"
    assert raw.headers["x-request-id"] == "req-42"
    sent = upstream.requests[-1]
    assert sent.json()["client_extra"] == {"nested": [1, 2]}
    # The upstream sees Triage's key for it, never the client's.
    assert sent.headers["authorization"] == "Bearer sk-upstream-alpha"
    assert sent.headers["x-request-id"] == "req-42"


def test_chat_streaming_relays_every_chunk_and_usage(upstream: FakeUpstream) -> None:
    upstream.stream_chunks = 4
    with running_proxy(_config(upstream)) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
        stream = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Hi"}], stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_completions_non_streaming_and_streaming(upstream: FakeUpstream) -> None:
    with running_proxy(_config(upstream)) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
        completion = client.completions.create(model="smol", prompt="Once upon")
        streamed = "".join(c.choices[0].text for c in client.completions.create(model="smol", prompt="x", stream=True))
    assert completion.choices[0].text == "Hello from alpha"
    assert streamed == "tok0 tok1 tok2 "


@pytest.mark.anyio
async def test_async_client_streaming_and_not(upstream: FakeUpstream) -> None:
    with running_proxy(_config(upstream)) as proxy:
        client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
        completion = await client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}])
        stream = await client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream]
        await client.close()
    assert completion.choices[0].message.content == "Hello from alpha"
    assert "".join(p or "" for p in pieces) == "tok0 tok1 tok2 "


def test_stream_is_relayed_before_the_upstream_finishes(upstream: FakeUpstream) -> None:
    """The first chunk reaches the client while the upstream still holds the rest back."""
    upstream.mode = "stream_hold"
    with running_proxy(_config(upstream)) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
        stream = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Hi"}], stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content == "tok0 "
        assert not upstream.release.is_set()
        upstream.release.set()
        rest = [c.choices[0].delta.content for c in stream]
    assert rest == ["tok1 ", "tok2 "]


def test_models_are_found_listed_once_and_routed(upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    # a: what it lists (alpha-model) plus two configured names; b: only what it lists.
    config = (
        f'[[backends]]\nname = "a"\nurl = "{upstream.url}"\nmodels = ["smol", "big"]\n'
        f'[[backends]]\nname = "b"\nurl = "{second_upstream.url}"\n'
    )
    with running_proxy(config) as proxy:
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
        ids = [model.id for model in client.models.list()]
        answer = client.chat.completions.create(model="beta-model", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert ids == ["alpha-model", "beta-model", "big", "smol"]
    assert answer.choices[0].message.content == "Hello from beta"
    assert "no-such-model" in str(missing.value)
