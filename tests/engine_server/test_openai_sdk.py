"""The official openai SDK against a real engine process: `python -m triage_router.engine_server`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import zmq
from triage_router.policies.kv_events import END_OF_REPLAY, BlockStored, EventBatch

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running_engine(model_dir: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "triage_router.engine_server", "--model", str(model_dir), "--port", "0", "--kv-cache-gib", "0.2",
         "--embedding-model", "none", "--served-model-name", "smol", "--num-threads", "1", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # blocks until the banner (or the process dies)
        lines.append(line)
        if line.startswith("Triage engine listening on "):
            break
    else:
        proc.wait()
        pytest.fail("engine did not start:\n" + "".join(lines))
    try:
        yield proc, line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kv_replay_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def engine_url(smollm2_dir, kv_replay_port):
    kv_events = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{free_port()}",
                 "replay_endpoint": f"tcp://*:{kv_replay_port}"}
    with running_engine(smollm2_dir, "--kv-events-config", json.dumps(kv_events)) as (_, url):
        yield url


def engine_core_pid(pid: int) -> int:
    """The spawned step-loop process (multiprocessing also starts a resource tracker)."""
    kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    (core,) = [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    return core


def test_openai_sdk_chat_and_stream(engine_url):
    from openai import OpenAI

    client = OpenAI(base_url=engine_url + "/v1", api_key="unused")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model="smol", messages=messages, temperature=0, extra_body={"priority": 0})
    assert r.choices[0].message.content == "The capital of France is Paris."
    stream = client.chat.completions.create(
        model="smol", messages=messages, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The capital of France is Paris."
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens_details.cached_tokens == 32
    assert [m.id for m in client.models.list()] == ["smol"]


def test_the_engine_process_publishes_kv_cache_events(engine_url, kv_replay_port):
    """--kv-events-config reaches the engine process, whose block pool publishes what it caches."""
    body = {"model": "smol", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 1}
    assert httpx.post(engine_url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{kv_replay_port}")
        dealer.send_multipart((b"", (0).to_bytes(8, "big")))  # every batch since the start
        stored = []
        while True:
            assert dealer.poll(30_000), "the replay did not finish"
            _, _, seq, payload = dealer.recv_multipart()
            if seq == END_OF_REPLAY:
                break
            stored += [e for e in msgspec.msgpack.decode(payload, type=EventBatch).events if isinstance(e, BlockStored)]
    finally:
        ctx.destroy(linger=0)
    first = [e for e in stored if e.parent_block_hash is None]
    assert first and all(e.block_size == 16 and len(e.token_ids) == 16 * len(e.block_hashes) for e in stored)


def test_cli_fails_clearly_on_a_missing_model(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "triage_router.engine_server", "--model", str(tmp_path / "nope"), "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0 and "cannot start" in r.stderr and "not found" in r.stderr


def test_cli_fails_fast_on_a_busy_port():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "triage_router.engine_server", "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
            timeout=120,
        )
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_the_step_loop_runs_in_its_own_process_and_its_death_is_reported(smollm2_dir):
    with running_engine(smollm2_dir) as (proc, url):
        core = engine_core_pid(proc.pid)
        body = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        os.kill(core, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json()["error"]["type"] == "server_error"
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 503 and "not running" in r.json()["error"]["message"]
