"""Schemathesis fuzzes a live router in front of a healthy FakeUpstream against the router's own
/openapi.json, with data that fits the schema and data that breaks it, on a budget that keeps
CI under a minute (bench/reliability/fuzz.py runs a larger one): no 5xx of the router's own,
and every answer's status, content type, headers and body as documented
(tests/fakes/fuzzing.py lists the checks, and why not the others)."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.fuzzing import fuzz_target, run_schemathesis

EXAMPLES = 10
SEED = 20261207  # CI fuzzes the same cases every run; the bench draws new ones


def test_the_router_answers_fuzzing_as_its_schema_says(tmp_path: Path) -> None:
    with fuzz_target() as url:
        run = run_schemathesis(url, EXAMPLES, tmp_path, seed=SEED, timeout_s=240)
    assert run.returncode == 0, run.output[-20_000:]
    report = run.report
    assert report["operations"]["tested"] == report["operations"]["total"] == 18, report["operations"]
    assert report["failures"] == [] and report["errors"] == []
    assert report["test_cases"]["generated"] > 500  # it did fuzz
