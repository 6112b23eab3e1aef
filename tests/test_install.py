"""What a fresh install gives: our import names shadow nothing, every module ships in the wheel,
and a base install (the router alone, no torch) serves a vLLM-style backend and refuses to launch
our engine with one line that names the extra to install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).parents[1]
FOLDERS = ["router", "policies", "engine_server", "kernels"]
BIN = Path(sys.executable).parent


def run_python(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", FOLDERS)
def test_a_top_level_folder_never_shadows_an_installed_package_of_its_name(name: str) -> None:
    # From the repository root, as pytest, `python -m` and a REPL there see it: the folder may be
    # a namespace portion (no origin), never a regular package that outranks site-packages.
    origin = run_python(f"import importlib.util as u; s = u.find_spec({name!r}); print(s and s.origin)", ROOT).strip()
    assert origin == "None" or not Path(origin).is_relative_to(ROOT / name), origin


def test_import_kernels_from_the_repository_root_never_finds_ours() -> None:
    try:
        metadata.distribution("kernels")
    except metadata.PackageNotFoundError:
        # Without Hugging Face's (transformers before 5.25 does not need it), our folder is at
        # most a namespace with nothing in it, which transformers' availability check rejects.
        assert run_python("import kernels; print(kernels.__file__)", ROOT).strip() == "None"
        return
    where = run_python("import kernels; print(kernels.__file__)", ROOT).strip()
    assert not Path(where).is_relative_to(ROOT / "kernels"), where
    # transformers imports it at module level; this is what broke on a fresh machine.
    run_python("import transformers.integrations.hub_kernels", ROOT)


@pytest.mark.parametrize("cwd", ["root", "elsewhere"])
def test_the_namespace_imports_and_runs_from_any_directory(cwd: str, tmp_path: Path) -> None:
    where = ROOT if cwd == "root" else tmp_path
    printed = run_python(
        "import triage_router.router.cli.main, triage_router.router.cli.simulate, triage_router.engine_server.config, "
        "triage_router.kernels.paged_attention as k; print(k.__file__)", where)
    assert Path(printed.strip()).name == "paged_attention.py"
    for command in ([sys.executable, "-m", "triage_router.router.cli", "--help"],
                    [str(BIN / "triage"), "--help"],
                    [sys.executable, "-m", "triage_router.engine_server", "--help"]):
        result = subprocess.run(command, cwd=where, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.startswith("usage:"), (command, result.stderr)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("triage_router-*.whl")
    return built


def test_the_wheel_ships_every_module_and_data_file_under_the_namespace(wheel: Path) -> None:
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"triage_router/{path.relative_to(ROOT).as_posix()}"
                for folder in FOLDERS for path in (ROOT / folder).rglob("*")
                if path.suffix in (".py", ".jsonl", ".cpp", ".html") and "__pycache__" not in path.parts}
    assert expected - shipped == set()
    assert not any(name.split("/")[0] in FOLDERS for name in shipped)


@pytest.fixture(scope="module")
def base_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv with `pip install triage-router`, no extras, at the lock's versions."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements.lock"),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    return venv


def test_a_base_install_is_the_sidecar_alone(base_install: Path) -> None:
    listed = subprocess.run([str(base_install / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            check=True, capture_output=True, text=True).stdout.lower()
    assert "torch==" not in listed and "transformers==" not in listed and "triage-router==" in listed
    # The router serves with its own server on uvloop; uvicorn is the engine's alone.
    assert "uvloop==" in listed and "uvicorn==" not in listed


def write_config(path: Path, backend: str) -> Path:
    path.write_text(f"[server]\nhost = \"127.0.0.1\"\nport = 0\n\n[[backends]]\n{backend}\n")
    return path


def test_a_base_install_stops_in_one_line_when_the_config_launches_our_engine(base_install: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "engine.toml", 'name = "engine"\nkind = "engine"\nurl = "http://127.0.0.1:18391"\n'
                                                    'models = ["smol"]\nlaunch = true')
    result = subprocess.run([str(base_install / "bin" / "triage"), "serve", "--config", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr  # one line, no traceback
    assert "pip install 'triage-router[engine]'" in result.stderr and "torch" in result.stderr
    engine = subprocess.run([str(base_install / "bin" / "triage"), "engine"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert engine.returncode != 0 and len(engine.stderr.strip().splitlines()) == 1, engine.stderr
    assert "pip install 'triage-router[engine]'" in engine.stderr


def test_a_base_install_serves_a_vllm_only_config(base_install: Path, tmp_path: Path) -> None:
    upstream = FakeUpstream("vllm").start()
    config = write_config(tmp_path / "vllm.toml", f'name = "vllm"\nurl = "{upstream.url}"\nmodels = ["smol"]')
    process = subprocess.Popen([str(base_install / "bin" / "triage"), "serve", "--config", str(config)], cwd=tmp_path,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Triage listening on "), line
        url = line.strip().removeprefix("Triage listening on ")
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                           json={"model": "smol", "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200 and reply.headers["x-triage-backend"] == "vllm"
        assert [r.path for r in upstream.requests if r.path.endswith("/chat/completions")] == ["/v1/chat/completions"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        upstream.stop()
