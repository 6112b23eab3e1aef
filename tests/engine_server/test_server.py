"""The HTTP surface, on the real SmolLM2 (loaded once per session)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from litestar.testing import TestClient

from triage_router.engine_server.engine_client import EngineClient
from triage_router.engine_server.http.app import create_app

MODEL = "smollm2-test"
PARIS = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}


@pytest.fixture
def client(smollm2_engine) -> Iterator[TestClient]:
    engine = EngineClient.in_thread(smollm2_engine)
    with TestClient(create_app(engine, model_name=MODEL)) as c:
        yield c
    assert not smollm2_engine.has_work()


def wait_idle(base_url: str, timeout: float = 120) -> None:
    """Until the engine's own gauges say nothing is running or waiting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(base_url + "/metrics").text
        busy = [line for line in text.splitlines() if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))]
        if all(line.endswith(" 0.0") for line in busy):
            return
        time.sleep(0.05)
    raise AssertionError("the engine did not go idle")


def events(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def test_chat_completion(client):
    r = client.post("/v1/chat/completions", json={**PARIS, "model": MODEL})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "The capital of France is Paris."}
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 37 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_stream_with_usage_and_logprobs(client):
    payload = {**PARIS, "stream": True, "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2}
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data = events(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "The capital of France is Paris."
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals == ["stop"]
    logprobs = [lp for c in chunks if c["choices"] and c["choices"][0]["logprobs"] for lp in c["choices"][0]["logprobs"]["content"]]
    assert "".join(lp["token"] for lp in logprobs).startswith("The capital")
    assert all(len(lp["top_logprobs"]) == 2 and lp["logprob"] <= 0 for lp in logprobs)
    assert logprobs[0]["top_logprobs"][0]["logprob"] >= logprobs[0]["top_logprobs"][1]["logprob"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(logprobs)


def test_completion_with_stop_string_and_token_ids(client, smollm2_engine):
    ids = smollm2_engine.tokenizer("The capital of France is")["input_ids"]
    r = client.post("/v1/completions", json={"prompt": ids, "temperature": 0, "max_tokens": 30, "stop": ["."], "logprobs": 1})
    body = r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and "." not in choice["text"] and "Paris" in choice["text"]
    assert len(choice["logprobs"]["tokens"]) == body["usage"]["completion_tokens"]
    r2 = client.post("/v1/completions", json={"prompt": "The capital of France is", "temperature": 0, "max_tokens": 3})
    assert r2.json()["choices"][0]["finish_reason"] == "length" and r2.json()["usage"]["completion_tokens"] == 3


def test_completion_stream(client):
    r = client.post("/v1/completions", json={"prompt": "1, 2, 3,", "temperature": 0, "max_tokens": 6, "stream": True})
    data = events(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "4" in "".join(c["choices"][0]["text"] for c in chunks)


def test_seeded_sampling_is_reproducible(client):
    payload = {**PARIS, "temperature": 1.0, "top_p": 0.9, "top_k": 40, "seed": 7, "max_tokens": 12}
    a = client.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
    b = client.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
    assert a == b


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({**PARIS, "priority": 7}, 400, "priority"),
        ({**PARIS, "model": "gpt-9"}, 404, "model"),
        ({**PARIS, "temperature": 3}, 400, "temperature"),
        ({**PARIS, "n": 0}, 400, "n"),
        ({**PARIS, "max_tokens": 100000}, 200, None),  # clamped to the context, like vLLM
        ({"messages": "hi"}, 400, "messages"),
        ({**PARIS, "top_logprobs": 50, "logprobs": True}, 400, "top_logprobs"),
    ],
)
def test_errors_use_openai_shape(client, payload, status, param):
    if status == 200:
        payload = {**payload, "max_tokens": 2}
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status
    if status != 200:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == param


def test_too_long_prompt_is_rejected(client, smollm2_engine):
    r = client.post("/v1/completions", json={"prompt": [1] * smollm2_engine.max_model_len})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_malformed_json_and_unknown_route(client):
    r = client.post("/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/chat/completions").status_code == 405


def test_models_health_metrics(client):
    assert client.get("/health").status_code == 200
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [MODEL]
    client.post("/v1/chat/completions", json={**PARIS, "max_tokens": 2})
    client.post("/v1/chat/completions", json={**PARIS, "max_tokens": 2})
    text = client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert values[name] == 0.0
    # The second identical prompt hits the two full blocks the first one left in the cache.
    assert values["vllm:prefix_cache_hits_total"] >= 32
    assert values["vllm:prefix_cache_queries_total"] >= values["vllm:prefix_cache_hits_total"] + 37


@pytest.mark.parametrize("n", [1, 3])
def test_client_disconnect_mid_stream_frees_the_kv_pool(smollm2_engine, n):
    engine = EngineClient.in_thread(smollm2_engine)
    app = create_app(engine, model_name=MODEL)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    before = smollm2_engine.generation_tokens_total
    try:
        payload = {**PARIS, "stream": True, "max_tokens": 400, "ignore_eos": True, "n": n}
        with httpx.Client(timeout=120) as http:
            with http.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=payload) as r:
                lines = r.iter_lines()
                seen = 0
                for line in lines:
                    if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                        seen += 1
                        if seen == 2:
                            break  # leave mid-stream: closing the response drops the connection
        wait_idle(f"http://127.0.0.1:{port}")
        assert smollm2_engine.kv.pool.num_free == smollm2_engine.kv.pool.num_blocks
        assert smollm2_engine.generation_tokens_total - before < 400  # every choice was aborted, not finished
        assert not smollm2_engine.seqs
    finally:
        server.should_exit = True
        thread.join()


def test_priority_from_header_when_the_body_has_none(client):
    ok = client.post("/v1/chat/completions", json={**PARIS, "max_tokens": 2}, headers={"x-priority": "0"})
    assert ok.status_code == 200
    bad = client.post("/v1/chat/completions", json={**PARIS, "max_tokens": 2}, headers={"x-priority": "urgent"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-priority"
    # The body wins over the header.
    body = client.post("/v1/chat/completions", json={**PARIS, "max_tokens": 2, "priority": 9}, headers={"x-priority": "0"})
    assert body.status_code == 400 and body.json()["error"]["param"] == "priority"


def test_n_choices_each_sample_their_own_sequence(client):
    payload = {**PARIS, "n": 3, "temperature": 1.0, "seed": 7, "max_tokens": 8}
    body = client.post("/v1/chat/completions", json=payload).json()
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) > 1  # seeds 7, 8, 9: not three copies
    assert body["usage"]["prompt_tokens"] == 37  # the prompt is counted once
    completion = body["usage"]["completion_tokens"]
    assert 3 <= completion <= 24 and body["usage"]["total_tokens"] == 37 + completion
    again = client.post("/v1/chat/completions", json=payload).json()
    assert [c["message"]["content"] for c in again["choices"]] == [c["message"]["content"] for c in choices]


def test_n_choices_stream_interleaved_with_their_index(client):
    payload = {"prompt": "Once upon a time", "n": 2, "temperature": 1.0, "seed": 1, "max_tokens": 6, "stream": True,
               "stream_options": {"include_usage": True}}
    r = client.post("/v1/completions", json=payload)
    data = events(r.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    texts = {0: "", 1: ""}
    finished = []
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finished.append(choice["index"])
    assert sorted(finished) == [0, 1] and all(texts.values())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    plain = client.post("/v1/completions", json={**payload, "stream": False}).json()
    assert [c["text"] for c in plain["choices"]] == [texts[0], texts[1]]


def test_n_out_of_range_is_a_clear_error(client):
    r = client.post("/v1/chat/completions", json={**PARIS, "n": 17})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_tokenize_and_detokenize_in_vllms_shapes(client, smollm2_engine):
    chat = client.post("/tokenize", json={"model": MODEL, **PARIS})
    assert chat.status_code == 200
    body = chat.json()
    # The same ids the chat endpoint prefills: its usage counts 37 prompt tokens.
    assert body["count"] == len(body["tokens"]) == 37
    assert body["max_model_len"] == smollm2_engine.limits.max_model_len
    plain = client.post("/tokenize", json={"model": MODEL, "prompt": "Hello world", "return_token_strs": True}).json()
    assert plain["token_strs"] == ["Hello", "Ġworld"]
    back = client.post("/detokenize", json={"model": MODEL, "tokens": plain["tokens"]})
    assert back.status_code == 200 and back.json() == {"prompt": "Hello world"}
    neither = client.post("/tokenize", json={"model": MODEL})
    assert neither.status_code == 400 and neither.json()["error"]["param"] == "prompt"
    bad_id = client.post("/detokenize", json={"model": MODEL, "tokens": [10**9]})
    assert bad_id.status_code == 400 and bad_id.json()["error"]["param"] == "tokens"
