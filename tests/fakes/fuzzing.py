"""Schemathesis against a live router in front of a healthy FakeUpstream, fuzzing every route
its /openapi.json describes. tests/router/http/test_fuzz.py runs it on a small budget in CI,
bench/reliability/fuzz.py on a larger one.

The backend is healthy and serves every model, so that any 5xx is the router's own doing. It is
`kind = "engine"`, which serves neither Responses nor Messages, so those go through
router/translation/ and the router's own translations are what gets checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.proxy import running_proxy
from tests.fakes.upstream import FakeUpstream

KEY = "sk-fuzz"
# What the fuzzer checks, and why not the others:
# - negative_data_rejection: the router validates only what it routes by and forwards the rest,
#   which the backend (here a fake that accepts anything) validates, so a bad `temperature`
#   rightly gets a 200 from the router;
# - positive_data_acceptance: some requests the schema allows are refused with a 400 by design:
#   what the Responses and Messages translations cannot express (a tool_use block in a user
#   turn), and `max_tokens: 1.0`, an integer to JSON Schema but not to the router's decoding;
# - the stateful and resource checks: the router keeps no resources.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "ignored_auth",
)


def router_config(upstream: FakeUpstream) -> str:
    return (f'[[backends]]\nname = "fake"\nurl = "{upstream.url}"\nkind = "engine"\nmodels = ["*"]\n'
            f'\n[[api_keys]]\nkey = "{KEY}"\nname = "fuzz"\n')


@contextmanager
def fuzz_target() -> Iterator[str]:
    """The URL of a live router, with one API key, in front of a healthy FakeUpstream."""
    upstream = FakeUpstream("fake").start()
    try:
        with running_proxy(router_config(upstream)) as proxy:
            yield proxy.url
    finally:
        upstream.stop()


@dataclass
class FuzzRun:
    returncode: int
    output: str
    report: dict  # schemathesis' JSON report


def run_schemathesis(url: str, examples: int, workdir: Path, *, seed: int | None = None,
                     timeout_s: float | None = None) -> FuzzRun:
    """`st run` on the router's own /openapi.json, positive and negative data alike, with
    `examples` test cases per operation in the fuzzing phase (the examples and coverage phases
    add their own, a few hundred in all)."""
    report = workdir / "report.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--mode", "all", "--max-examples", str(examples), "--phases", "examples,coverage,fuzzing",
        "--checks", ",".join(CHECKS), "--header", f"Authorization: Bearer {KEY}",
        "--workers", "1", "--request-timeout", "10", "--generation-database", "none", "--no-color",
        "--report", "json", "--report-json-path", str(report),
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=timeout_s)
    return FuzzRun(done.returncode, done.stdout + done.stderr, json.loads(report.read_text()) if report.exists() else {})
