"""Opt-in: Triage in front of a real vLLM-CPU server started with `--scheduling-policy priority`.

Runs only when TRIAGE_VLLM_PYTHON names the python of a venv with vLLM installed (the recipe is
in docs/benchmarks.md, "Running vLLM-CPU here"; bench/fleet/run.py uses the same one), e.g.

    TRIAGE_VLLM_PYTHON=bench/.venvs/vllm/bin/python .venv/bin/pytest tests/e2e/test_vllm_fleet.py

It starts one small vLLM (SmolLM2-135M-Instruct, one core, prefix caching on), puts Triage in
front of it with `scheduling = "priority"`, and checks a real answer comes back through the
router, with the `priority` field accepted upstream, and that vLLM's own prefix-cache counters
moved when two requests shared a long system prompt. Without the variable it is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]
VLLM_PYTHON = os.environ.get("TRIAGE_VLLM_PYTHON", "")

pytestmark = [
    pytest.mark.skipif(
        not VLLM_PYTHON,
        reason="opt-in: set TRIAGE_VLLM_PYTHON to the python of a vLLM venv (e.g. bench/.venvs/vllm/bin/python) "
               "to run Triage against a real vLLM-CPU server",
    ),
    pytest.mark.timeout(600),
]

SYSTEM = (
    "You are the customer assistant of Northwind Outfitters, an outdoor retail company based in Portland. "
    + " ".join(
        f"Rule {i}: answer questions about orders, refunds and shipping politely, confirm the account first, "
        f"never ask for a password or a full card number, and offer a ticket when you cannot help."
        for i in range(1, 16)
    )
)


def _procs():
    """bench/fleet/procs.py, which holds the vLLM recipe (it is not an installed package)."""
    spec = importlib.util.spec_from_file_location("fleet_procs", ROOT / "bench" / "fleet" / "procs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_triage_in_front_of_a_real_vllm(tmp_path: Path) -> None:
    procs = _procs()
    if not Path(VLLM_PYTHON).exists():
        pytest.fail(f"TRIAGE_VLLM_PYTHON={VLLM_PYTHON!r} does not exist")
    model_dir = procs.vllm_model_dir(tmp_path / "model")
    started = []
    try:
        # Not --enforce-eager, and float32: either --enforce-eager or bf16 on a CPU without
        # AVX-512 BF16 made vLLM-CPU 0.32 answer this question with nonsense ("L'Étoile, la
        # Marseillaise, ..."), where float32 in the default mode gives transformers' greedy answer.
        vllm = procs.start_vllm("vllm", model_dir, procs.free_port(), "0", tmp_path, blocks=48, max_num_seqs=4,
                                dtype="float32")
        started.append(vllm)
        procs.wait_ready(vllm, "/health", timeout=420)
        config = procs.triage_config([("vllm", vllm.url)], "cache-affinity", max_load=8)
        assert 'scheduling = "priority"' in config
        triage = procs.start_triage("triage", config, procs.free_port(), tmp_path, python=sys.executable)
        started.append(triage)
        procs.wait_ready(triage, "/health", timeout=60)

        with httpx.Client(base_url=triage.url, timeout=120) as client:
            # Triage sends `priority` upstream because the backend is scheduling = "priority";
            # a non-zero value would be a 400 from a vLLM without --scheduling-policy priority.
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "smol", "temperature": 0, "max_tokens": 20,
                      "messages": [{"role": "user", "content": "What is the capital of France?"}]},
                headers={"x-priority": "1", "x-triage-debug": "1"},
            )
            assert answer.status_code == 200, answer.text
            assert "Paris" in answer.json()["choices"][0]["message"]["content"]
            assert answer.headers["x-triage-backend"] == "vllm"
            assert answer.headers["x-triage-priority"] == "1"

            before = procs.read_vllm_counters(vllm.url)
            for question in ("How long does a refund take?", "Do you ship to Canada?"):
                shared = client.post(
                    "/v1/chat/completions",
                    json={"model": "smol", "temperature": 0, "max_tokens": 8, "stream": True,
                          "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]},
                    headers={"x-priority": "3"},
                )
                assert shared.status_code == 200, shared.text
                assert "data: [DONE]" in shared.text
            time.sleep(0.5)
            after = procs.read_vllm_counters(vllm.url)
        # vLLM's own counters: both prompts were looked up, and the second found the shared
        # system prompt (several 128-token blocks) in the cache.
        assert after["queries"] > before["queries"]
        assert after["hits"] - before["hits"] >= 128, (before, after)
        assert after["success"] - before["success"] == 2
        _every_endpoint_passes_through(triage.url)
    finally:
        procs.stop_all(started)


def _every_endpoint_passes_through(url: str) -> None:
    """vLLM serves Responses, Messages and /tokenize itself: Triage routes them there unchanged,
    plain and streamed, through the OpenAI SDK and in Anthropic's shapes."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=120)
    assert "smol" in {m.id for m in client.models.list()}
    answer = client.responses.create(model="smol", input="What is the capital of France?", temperature=0,
                                     max_output_tokens=20)
    assert "Paris" in answer.output_text
    events = list(client.responses.create(model="smol", input="What is the capital of France?", temperature=0,
                                          max_output_tokens=20, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    body = {"model": "smol", "max_tokens": 20, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    message = httpx.post(f"{url}/v1/messages", json=body, headers=headers, timeout=120)
    assert message.status_code == 200, message.text
    assert message.json()["type"] == "message" and "Paris" in message.json()["content"][0]["text"]
    with httpx.stream("POST", f"{url}/v1/messages", json={**body, "stream": True}, headers=headers, timeout=120) as r:
        text = "".join(r.iter_text())
    assert "event: message_start" in text and "event: message_stop" in text
    tokens = httpx.post(f"{url}/tokenize", json={"model": "smol", "prompt": "Hello world"}, timeout=60)
    assert tokens.status_code == 200 and tokens.json()["count"] == 2
