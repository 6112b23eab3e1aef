"""`triage serve` launching our real engine (SmolLM2) with KV events: the engine publishes what it
caches, and the router's own tokenization of a request matches it block for block.

This is the one place where the router's rendering of the chat template and its tokenizer meet a
real engine's: a single differing token would cut the match short.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.test_embedded_engine import free_port
from triage_router.engine_server.checkpoint import resolve_model_dir

SYSTEM = " ".join(f"Rule {i}: a refund for order class {i} takes {i % 5 + 2} days." for i in range(30))
BLOCK = 16  # the engine's default --block-size
# Long enough that the question fills full blocks of its own, which another question must not match.
QUESTION = "How long does a refund for class 7 take, and can I speed it up? " * 3


def chat(question: str) -> dict:
    return {"model": "smol", "max_tokens": 3, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}


def index_blocks(url: str) -> float:
    found = re.search(r'^triage_kv_index_blocks\{backend="engine"\} (\S+)$', httpx.get(f"{url}/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_router_matches_what_a_real_engine_reports(tmp_path: Path) -> None:
    events, replay = free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[[backends]]
name = "engine"
url = "http://127.0.0.1:{free_port()}"
kind = "engine"
models = ["smol"]
launch = true
launch_args = ["--model", "default", "--served-model-name", "smol", "--embedding-model", "none"]
kv_events = {{ endpoint = "tcp://127.0.0.1:{events}", replay_endpoint = "tcp://127.0.0.1:{replay}" }}
tokenizer = "{resolve_model_dir('default')}"
""")
    process = subprocess.Popen([sys.executable, "-m", "triage_router.router.cli", "serve", "--config", str(config),
                                "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Triage listening on "):
                break
        assert lines and lines[-1].startswith("Triage listening on "), "".join(lines)
        url = lines[-1].strip().removeprefix("Triage listening on ")

        first = httpx.post(f"{url}/v1/chat/completions", json=chat(QUESTION), timeout=120).json()
        prompt_tokens = first["usage"]["prompt_tokens"]
        deadline = time.monotonic() + 30
        while index_blocks(url) < prompt_tokens // BLOCK:
            assert time.monotonic() < deadline, "the engine's stored blocks never reached the router"
            time.sleep(0.1)

        # The same request again: every full block of its prompt is held, by the events' account.
        again = httpx.post(f"{url}/triage/explain/v1/chat/completions", json=chat(QUESTION)).json()
        assert again["cache"]["engine"] == {"matched_tokens": prompt_tokens // BLOCK * BLOCK,
                                            "share": round(prompt_tokens // BLOCK * BLOCK / prompt_tokens, 4),
                                            "source": "kv_events"}
        # Another question after the same system prompt: the shared blocks, up to where it differs.
        other = httpx.post(f"{url}/triage/explain/v1/chat/completions", json=chat("And class 9?")).json()
        assert prompt_tokens // 2 < other["cache"]["engine"]["matched_tokens"] <= prompt_tokens - 3 * BLOCK
        metrics = httpx.get(f"{url}/metrics").text
        assert 'triage_kv_index_trusted{backend="engine"} 1.0' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
