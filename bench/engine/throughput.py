"""Engine throughput: our engine vs vLLM-CPU vs transformers' batched generate, one run.

Same model (SmolLM2-135M-Instruct, converted once from the GGUF), same workload: N requests
at concurrency C, each forced to produce exactly T tokens (ignore_eos), prompts given as
token ids so every server sees identical inputs. Reports output tok/s and TTFT/TPOT p50/p99
(from the stream), plus our engine's step-time split from /metrics.

    .venv/bin/python bench/engine/throughput.py --targets engine,transformers
    .venv/bin/python bench/engine/throughput.py --targets engine,vllm,transformers --threads 2
    .venv/bin/python bench/engine/throughput.py --targets engine,engine-events   # what publishing KV events costs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from triage_router.engine_server.checkpoint import resolve_model_dir  # noqa: E402


def prompts(tokenizer, n: int) -> list[list[int]]:
    topics = ["the sea", "a city at night", "an old library", "a mountain road", "a robot", "winter", "a market", "a violin"]
    out = []
    for i in range(n):
        text = f"Write a long story about {topics[i % len(topics)]} and the number {i}."
        out.append(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"])
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(int(q / 100 * len(values)), len(values) - 1)]


async def drive(url: str, model: str, prompt_ids: list[list[int]], concurrency: int, tokens: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    ttfts: list[float] = []
    tpots: list[float] = []
    total = 0

    async def one(session: aiohttp.ClientSession, ids: list[int]) -> None:
        nonlocal total
        body = {"model": model, "prompt": ids, "max_tokens": tokens, "ignore_eos": True, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}}
        async with sem:
            start = time.perf_counter()
            first = None
            n = 0
            async with session.post(url + "/v1/completions", json=body) as r:
                r.raise_for_status()
                async for raw in r.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        n = chunk["usage"]["completion_tokens"]
                    if chunk["choices"] and chunk["choices"][0].get("text") and first is None:
                        first = time.perf_counter()
            end = time.perf_counter()
            assert first is not None
            ttfts.append(first - start)
            if n > 1:
                tpots.append((end - first) / (n - 1))
            total += n

    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await one(session, prompt_ids[0])  # warm-up, not counted
        ttfts.clear(), tpots.clear()
        total = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session, ids) for ids in prompt_ids))
        elapsed = time.perf_counter() - t0
    return {
        "output_tok_s": total / elapsed, "elapsed_s": elapsed, "output_tokens": total,
        "ttft_p50_ms": pct(ttfts, 50) * 1e3, "ttft_p99_ms": pct(ttfts, 99) * 1e3,
        "tpot_p50_ms": pct(tpots, 50) * 1e3, "tpot_p99_ms": pct(tpots, 99) * 1e3,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(args, model_dir: Path, publish_events: bool = False) -> tuple[subprocess.Popen, str]:
    """Our engine; with `publish_events`, it also publishes its KV-cache events over ZeroMQ, as a
    backend that router replicas subscribe to does (`engine-events`: what publishing costs)."""
    cmd = [sys.executable, "-m", "triage_router.engine_server", "--model", str(model_dir), "--dtype", args.dtype, "--port", "0",
           "--embedding-model", "none", "--served-model-name", "smol", "--max-num-seqs", str(args.concurrency),
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--num-threads", str(args.threads)]
    if publish_events:
        cmd += ["--kv-events-config", json.dumps({"enable_kv_cache_events": True, "publisher": "zmq",
                                                  "endpoint": f"tcp://*:{free_port()}",
                                                  "replay_endpoint": f"tcp://*:{free_port()}"})]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Triage engine listening on "):
            return proc, line.split()[-1]
    raise RuntimeError("engine did not start")


def start_vllm(args, model_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    bind = "0" if args.threads == 1 else f"0-{args.threads - 1}"
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", "smol", "--dtype", args.dtype, "--port", str(port), "--enable-prefix-caching",
           "--scheduling-policy", "priority", "--max-num-seqs", str(args.concurrency)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.time() + 900
    while time.time() < deadline:  # vLLM prints no banner we can rely on: poll /health
        if proc.poll() is not None:
            raise RuntimeError("vLLM exited during startup")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(2)
    raise RuntimeError("vLLM did not start")


def engine_profile(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics") as r:
        text = r.read().decode()
    phases = {}
    for line in text.splitlines():
        if line.startswith("triage_engine_step_seconds_total"):
            phase = line.split('phase="')[1].split('"')[0]
            phases[phase] = float(line.rsplit(" ", 1)[1])
    total = sum(phases.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in phases.items()}


def run_transformers(args, model_dir: Path, prompt_ids: list[list[int]]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    config = GenerationConfig(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, pad_token_id=0)

    def batch_inputs(batch: list[list[int]]):
        width = max(len(p) for p in batch)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        return ids, mask

    with torch.no_grad():
        ids, mask = batch_inputs(prompt_ids[:2])
        model.generate(ids, attention_mask=mask, generation_config=GenerationConfig(max_new_tokens=4, do_sample=False, pad_token_id=0))
        total = 0
        t0 = time.perf_counter()
        for i in range(0, len(prompt_ids), args.concurrency):
            ids, mask = batch_inputs(prompt_ids[i:i + args.concurrency])
            out = model.generate(ids, attention_mask=mask, generation_config=config)
            total += (out.shape[1] - ids.shape[1]) * out.shape[0]
        elapsed = time.perf_counter() - t0
    return {"output_tok_s": total / elapsed, "elapsed_s": elapsed, "output_tokens": total}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--targets", default="engine,transformers")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--vllm-python", default=str(ROOT / "bench/.venvs/vllm/bin/python"))
    p.add_argument("--threads", type=int, default=2, help="compute threads for every target (vLLM: cores bound)")
    p.add_argument("--out", default=None, help="write results as JSON here")
    args = p.parse_args()

    from transformers import AutoTokenizer

    model_dir = resolve_model_dir("default")
    ids = prompts(AutoTokenizer.from_pretrained(model_dir), args.requests)
    results: dict[str, dict] = {}
    for target in args.targets.split(","):
        if target == "transformers":
            results[target] = run_transformers(args, model_dir, ids)
        else:
            if target == "vllm":
                proc, url = start_vllm(args, model_dir)
            else:
                proc, url = start_engine(args, model_dir, publish_events=target == "engine-events")
            try:
                results[target] = asyncio.run(drive(url, "smol", ids, args.concurrency, args.tokens))
                if target.startswith("engine"):
                    results[target]["step_split_pct"] = engine_profile(url)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        print(target, json.dumps(results[target]), flush=True)
    meta = {"requests": args.requests, "concurrency": args.concurrency, "tokens": args.tokens, "dtype": args.dtype,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "threads": args.threads, "load_average_at_end": os.getloadavg()}
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
