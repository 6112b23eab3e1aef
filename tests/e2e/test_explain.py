"""`triage explain` against a live router: the decision for a request, and nothing sent upstream."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream

CHAT = {"model": "smol", "messages": [{"role": "user", "content": "Summarise this incident report."}]}


def _config(*upstreams: FakeUpstream, extra: str = "") -> str:
    return "".join(f'[[backends]]\nname = "{u.name}"\nurl = "{u.url}"\nmodels = ["smol"]\nmax_load = 1\n'
                   for u in upstreams) + extra


def test_explain_gives_priority_length_scores_and_placement_and_sends_nothing(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    rule = '[[rules]]\nname = "incident"\nkeywords = ["incident"]\npriority = 1\n'
    with running_proxy(_config(upstream, second_upstream, extra=rule)) as proxy:
        answer = httpx.post(f"{proxy.url}/triage/explain/v1/chat/completions", json=CHAT)
        cli = subprocess.run([sys.executable, "-m", "triage_router.router.cli", "explain", "--url", proxy.url],
                             input=json.dumps(CHAT), capture_output=True, text=True, timeout=60)
    decision = answer.json()
    assert answer.status_code == 200
    assert decision["priority"] == {"level": 1, "source": "rule:incident", "clamped_from": None, "adjusted_by": []}
    assert decision["predicted_output_tokens"]["median"] > 0
    assert decision["placement"]["backend"] in ("alpha", "beta") and not decision["placement"]["would_wait"]
    assert {c["backend"] for c in decision["candidates"]} == {"alpha", "beta"}
    assert decision["cache"]["alpha"] == {"matched_tokens": 0, "share": 0.0, "source": "approximate"}
    assert upstream.requests == [] and second_upstream.requests == []  # explained, not sent
    assert cli.returncode == 0, cli.stderr
    assert "priority 1  from rule:incident" in cli.stdout and "placed   " in cli.stdout
    assert "0 prompt tokens held (0%), by the approximate index" in cli.stdout


def test_explain_says_when_a_request_would_wait_and_refuses_what_a_real_request_would(upstream: FakeUpstream) -> None:
    upstream.mode = "stream_hold"
    keys = '[[api_keys]]\nkey = "sk-team"\nname = "team"\n'
    with running_proxy(_config(upstream, extra=keys)) as proxy:
        team = {"authorization": "Bearer sk-team"}
        with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=team):
            assert upstream.received.wait(10)
            full = httpx.post(f"{proxy.url}/triage/explain/v1/chat/completions", json=CHAT, headers=team).json()
            upstream.release.set()
        anonymous = httpx.post(f"{proxy.url}/triage/explain/v1/chat/completions", json=CHAT)
        unknown = httpx.post(f"{proxy.url}/triage/explain/v1/embeddings", json={"model": "smol", "input": "x"},
                             headers=team)
    assert full["placement"] == {"backend": None, "policy": full["placement"]["policy"],
                                 "reason": full["placement"]["reason"], "would_wait": True}
    assert full["saturated"] == {"alpha": "load 1 of 1 for priority 2"}
    assert full["cache"] == {}  # only eligible candidates are matched
    assert anonymous.status_code == 401
    assert unknown.status_code == 404
