"""`triage simulate`: the simulator's command line, its JSON, tables, sweeps and plots."""

from __future__ import annotations

import argparse
import json

import pytest

from triage_router.router.cli import simulate as cli


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_cli_json_reproduces_the_paper_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("--setting", "A100_4B", "--gap", "0.01", "--maxcon", "10", "--gap-num", "10",
                 "--seed", "0", "--compare", "fcfs,sjf,pjf,semantic,default", "--json")
    assert cli.run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    pols = doc["policies"]
    assert set(pols) == {"fcfs", "sjf", "pjf", "semantic", "default (kv-wsjf+aging)"}
    for p in pols.values():
        assert len(p["per_priority_mean"]) == 5 and p["mean"] > 0
    assert pols["semantic"]["per_priority_mean"][0] <= pols["pjf"]["per_priority_mean"][0]
    assert pols["sjf"]["mean"] <= min(pols[k]["mean"] for k in ("fcfs", "pjf", "semantic"))
    assert pols["fcfs"]["mean"] >= pols["sjf"]["mean"]
    # same seed, same numbers
    assert cli.run(args) == 0
    assert json.loads(capsys.readouterr().out)["policies"] == pols


def test_cli_table_sweep_and_plot(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "out.png"
    args = _args("--setting", "A100_4B,A5000_4B", "--maxcon", "3", "--gap-num", "4",
                 "--compare", "fcfs,semantic", "--plot", str(png))
    assert cli.run(args) == 0
    out = capsys.readouterr()
    assert out.out.count("## ") == 2 and "P0 mean (p99)" in out.out
    assert "[4/4]" in out.err  # progress on a sweep
    assert png.stat().st_size > 10_000


def test_cli_rejects_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(_args("--compare", "fcfs,nope")) == 2
    assert "nope" in capsys.readouterr().err
