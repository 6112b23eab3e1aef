"""`triage serve` as a user runs it: a real process on a real port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

TRIAGE = [sys.executable, "-m", "triage_router.router.cli"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_serve_prints_its_address_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = _write(tmp_path, '[[backends]]\nname = "a"\nurl = "http://127.0.0.1:9"\n')
    process = subprocess.Popen([*TRIAGE, "serve", "--config", str(config), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("Triage listening on http://127.0.0.1:")
        url = line.removeprefix("Triage listening on ")
        assert httpx.get(f"{url}/health").json()["backends"] == {"a": "up"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


def test_config_from_environment(tmp_path: Path) -> None:
    config = _write(tmp_path, "[server]\nport = 99999\n")
    result = subprocess.run([*TRIAGE, "serve"], capture_output=True, text=True, timeout=30,
                            env={"TRIAGE_CONFIG": str(config), "PATH": ""})
    assert result.returncode == 2
    assert "server.port: expected `int` <= 65535" in result.stderr


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    config = _write(tmp_path, "")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*TRIAGE, "serve", "--config", str(config), "--port", str(port)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    config = _write(tmp_path, '[[backends]]\nname = "a"\nurl = "localhost:8000"\n')
    result = subprocess.run([*TRIAGE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{config}: backends[0].url: expected an http(s) URL" in result.stderr


def test_engine_subcommand_hands_over_to_the_engine_process() -> None:
    result = subprocess.run([*TRIAGE, "engine", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m triage_router.engine_server")


def test_launch_is_only_for_engines(tmp_path: Path) -> None:
    config = _write(tmp_path, '[[backends]]\nname = "v"\nurl = "http://127.0.0.1:9"\nkind = "vllm"\nlaunch = true\n')
    result = subprocess.run([*TRIAGE, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "backends[0].launch" in result.stderr


def test_an_engine_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    config = _write(tmp_path, '[[backends]]\nname = "e"\nurl = "http://127.0.0.1:18178"\nkind = "engine"\n'
                              'launch = true\nlaunch_args = ["--model", "/no/such/model.gguf", "--embedding-model", "none"]\n')
    result = subprocess.run([*TRIAGE, "serve", "--config", str(config), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "engine e exited with status" in result.stderr


def test_simulate_is_deterministic_for_a_seed() -> None:
    command = [*TRIAGE, "simulate", "--mode", "realistic", "--requests", "40", "--seed", "7", "--compare", "fcfs,semantic"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "semantic" in first.stdout and "fcfs" in first.stdout
    assert first.stdout == second.stdout
