"""Every endpoint besides chat and completions, through a live proxy: embeddings with priority
and admission, vLLM's /tokenize, and the passthrough of any other /v1/ path by its model,
multipart uploads included."""

from __future__ import annotations

import httpx
import openai

from tests.fakes.minilm import MiniLM
from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream


def _config(*upstreams: FakeUpstream) -> str:
    return "".join(f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\n' for u in upstreams)


def test_embeddings_route_by_a_listed_model_with_priority() -> None:
    # The backend configures no models: the embedding model is found in its /v1/models.
    embedder = FakeUpstream("embedder", embed=MiniLM().embed).start()
    try:
        with running_proxy(_config(embedder)) as proxy:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
            raw = client.embeddings.with_raw_response.create(
                model="all-MiniLM-L6-v2", input=["the server is down", "lunch menu"], extra_headers={"x-priority": "3"})
            answer = raw.parse()
    finally:
        embedder.stop()
    assert [len(d.embedding) for d in answer.data] == [384, 384]
    assert raw.headers["x-triage-priority"] == "3" and raw.headers["x-triage-backend"] == "embedder"
    forwarded = embedder.requests[-1]
    assert forwarded.path == "/v1/embeddings"
    assert "priority" not in forwarded.json()  # forwarded unchanged


def test_tokenize_and_unknown_paths_pass_through_by_model(upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    upstream.listed_models = ["smol"]
    second_upstream.listed_models = ["rerank-model"]
    second_upstream.unserved_paths = {"/v1/nothing"}
    try:
        with running_proxy(_config(upstream, second_upstream)) as proxy:
            tokenize = httpx.post(f"{proxy.url}/tokenize", json={"model": "smol", "prompt": "hi"})
            rerank = httpx.post(f"{proxy.url}/v1/rerank?top_n=2", json={"model": "rerank-model", "query": "q",
                                                                          "documents": ["a", "b"], "extra": [1, 2]})
            unserved = httpx.post(f"{proxy.url}/v1/nothing", json={"model": "rerank-model"})
            unknown_model = httpx.post(f"{proxy.url}/v1/rerank", json={"model": "who", "query": "q"})
            no_model = httpx.post(f"{proxy.url}/v1/rerank", json={"query": "q"})
    finally:
        upstream.listed_models, second_upstream.listed_models, second_upstream.unserved_paths = [], [], set()
    assert tokenize.status_code == 200 and tokenize.headers["x-triage-backend"] == "alpha"
    assert upstream.requests[-1].path == "/tokenize"
    assert rerank.status_code == 200 and rerank.headers["x-triage-backend"] == "beta"
    sent = second_upstream.requests[-2]
    assert sent.path == "/v1/rerank?top_n=2" and sent.json()["extra"] == [1, 2]  # unknown fields kept
    assert unserved.status_code == 404 and unserved.json()["error"]["code"] == "not_found"
    assert unknown_model.status_code == 404 and "who" in unknown_model.json()["error"]["message"]
    assert no_model.status_code == 400 and no_model.json()["error"]["type"] == "invalid_request_error"


def test_a_multipart_upload_is_routed_by_its_form_field(upstream: FakeUpstream) -> None:
    upstream.listed_models = ["whisper"]
    try:
        with running_proxy(_config(upstream)) as proxy:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
            text = client.audio.transcriptions.create(model="whisper", file=("a.wav", b"RIFF" + b"\0" * 400))
    finally:
        upstream.listed_models = []
    assert text.text.startswith("alpha heard") and upstream.requests[-1].path == "/v1/audio/transcriptions"
    assert b'name="model"' in upstream.requests[-1].body  # the form, byte for byte


def test_responses_and_messages_pass_through_to_vllm_and_translate_elsewhere(
        upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    # alpha is a vLLM (it serves both APIs itself); beta a plain OpenAI-compatible chat server.
    config = (f'[[backends]]\nname = "alpha"\nkind = "vllm"\nurl = "{upstream.url}"\nmodels = ["big"]\n'
              f'[[backends]]\nname = "beta"\nurl = "{second_upstream.url}"\nmodels = ["smol"]\n')
    with running_proxy(config) as proxy:
        native = httpx.post(f"{proxy.url}/v1/responses", json={"model": "big", "input": "hi", "extra": 1})
        translated = httpx.post(f"{proxy.url}/v1/messages", headers={"x-api-key": "k"},
                                json={"model": "smol", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert upstream.requests[-1].path == "/v1/responses" and upstream.requests[-1].json()["extra"] == 1
    assert native.headers["x-triage-backend"] == "alpha"
    sent = second_upstream.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.json()["messages"] == [{"role": "user", "content": "hi"}]
    body = translated.json()
    assert body["type"] == "message" and body["content"] == [{"type": "text", "text": "Hello from beta"}]
    assert body["usage"] == {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0}


def test_an_alias_is_served_as_its_model_and_a_fallback_takes_over(
        upstream: FakeUpstream, second_upstream: FakeUpstream) -> None:
    config = (f'[[backends]]\nname = "alpha"\nurl = "{upstream.url}"\nmodels = ["smol"]\n'
              f'[[backends]]\nname = "beta"\nurl = "{second_upstream.url}"\nmodels = ["big"]\n'
              '[[models]]\nname = "gpt-4o-mini"\nserve_as = "smol"\n'
              '[[models]]\nname = "big"\nfallback = "smol"\n')
    second_upstream.mode = "refuse"
    try:
        with running_proxy(config) as proxy:
            client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-client", max_retries=0)
            listed = {m.id for m in client.models.list()}
            aliased = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            alias_body = upstream.requests[-1].json()
            fell_back = client.chat.completions.with_raw_response.create(
                model="big", messages=[{"role": "user", "content": "hi"}])
            fallback_body = upstream.requests[-1].json()
    finally:
        second_upstream.mode = "ok"
    assert "gpt-4o-mini" in listed
    assert aliased.headers["x-triage-backend"] == "alpha" and alias_body["model"] == "smol"
    assert fell_back.headers["x-triage-backend"] == "alpha" and fallback_body["model"] == "smol"
    assert second_upstream.requests, "the fallback is taken only after the model's own backend failed"
