"""Fuzzing: schemathesis against a live Triage in front of a healthy fake backend, on every route
of Triage's own /openapi.json, with data that fits the schema and data that breaks it (its
examples, coverage and fuzzing phases). The checks: no 5xx (the backend is healthy, so any is the
router's own), statuses, content types, headers and bodies as documented, 405 with Allow for
an undocumented method, 401 without the key. tests/fakes/fuzzing.py sets it up;
tests/router/http/test_fuzz.py runs the same with 10 examples and a fixed seed in CI.

    .venv/bin/python bench/reliability/fuzz.py --examples 1000

`--examples` is the number of test cases per operation in the fuzzing phase; the other phases add
a few hundred in all. Without `--seed` each run draws new cases. Prints schemathesis's report
and a summary line, writes its JSON report to bench/results/fuzz-<UTC timestamp>.json, and
exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.fakes.fuzzing import fuzz_target, run_schemathesis  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="test cases per operation in the fuzzing phase")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis' seed, to repeat a run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, fuzz_target() as url:
        run = run_schemathesis(url, args.examples, Path(workdir), seed=args.seed)
        print(run.output)
        if not run.report:  # schemathesis itself failed; its output says why
            return 1
        RESULTS.mkdir(parents=True, exist_ok=True)
        saved = RESULTS / f"fuzz-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
        shutil.copy(Path(workdir) / "report.json", saved)
    cases, operations = run.report["test_cases"], run.report["operations"]
    print(f"{cases['generated']} test cases on {operations['tested']}/{operations['total']} operations in "
          f"{run.report['running_time']:.0f} s (seed {run.report['seed']}): {cases['with_failures']} with failures, "
          f"{len(run.report['errors'])} errors; report: {saved.relative_to(ROOT)}")
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
