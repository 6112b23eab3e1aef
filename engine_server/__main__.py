"""`python -m triage_router.engine_server --model PATH|default [--dtype float32|bfloat16] [--host H] [--port N]`."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from triage_router.engine_server.config import EngineConfig, KVEventsConfig


def kv_events_config(text: str) -> KVEventsConfig:
    try:
        return KVEventsConfig.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m triage_router.engine_server", description="Triage's own OpenAI-compatible engine.")
    p.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), a .gguf file or an HF checkpoint directory")
    p.add_argument("--served-model-name", default=None, help="model name clients send (default: derived from --model)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--kv-cache-gib", type=float, default=1.0, help="KV cache budget on the CPU")
    p.add_argument("--swap-space-gib", type=float, default=0.5, help="host memory for swapped-out sequences")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--ordering", default="default",
                   help="a policies/ ordering name: default (the router's and the simulator's too), fcfs, pjf, semantic+aging...")
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--no-priority-preemption", action="store_true")
    p.add_argument("--embedding-model", default="default", help="'default' (all-MiniLM-L6-v2), a directory, or 'none'")
    p.add_argument("--embedding-dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--kv-events-config", type=kv_events_config, default=None, metavar="JSON",
                   help="publish KV-cache events as vLLM does, e.g. "
                        "'{\"enable_kv_cache_events\": true, \"endpoint\": \"tcp://*:5557\"}' (docs/design/engine.md)")
    p.add_argument("--dev-mode", action="store_true",
                   help="serve POST /reset_prefix_cache, as vLLM does with VLLM_SERVER_DEV_MODE=1 (benchmarks)")
    p.add_argument("--num-threads", type=int, default=None)
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def served_name(model: str) -> str:
    if model == "default":
        return "SmolLM2-135M-Instruct"
    path = Path(model)
    return path.stem.split(".")[0] if path.suffix == ".gguf" else path.name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = EngineConfig(
        model=args.model, served_model_name=args.served_model_name or served_name(args.model), dtype=args.dtype,
        device=args.device, block_size=args.block_size, kv_cache_gib=args.kv_cache_gib,
        swap_space_gib=args.swap_space_gib, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
        ordering=args.ordering, enable_prefix_caching=not args.no_prefix_caching,
        priority_preemption=not args.no_priority_preemption,
        embedding_model=None if args.embedding_model == "none" else args.embedding_model,
        embedding_dtype=args.embedding_dtype, num_threads=args.num_threads, kv_events=args.kv_events_config,
    )
    # Bind first: a busy port fails in milliseconds, not after loading the model. Connections
    # wait in the backlog until the server accepts them; --port 0 reports the chosen port.
    try:
        sock = socket.create_server((args.host, args.port), reuse_port=False)
    except OSError as e:
        print(f"triage engine: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    # Heavy imports after argument parsing, so that --help is instant.
    try:
        import torch
        import uvicorn

        from triage_router.engine_server.embeddings import EmbeddingBatcher, SentenceEmbedder
        from triage_router.engine_server.engine import DTYPES
        from triage_router.engine_server.engine_client import EngineClient
        from triage_router.engine_server.http.app import create_app
    except ModuleNotFoundError as e:  # a base install: the router alone, without the engine extra
        print(f"triage engine: cannot start: {e.name} is not installed: pip install 'triage-router[engine]'",
              file=sys.stderr)
        sock.close()
        return 1

    engine = None
    try:
        engine = EngineClient.spawn(config)  # the step loop gets its own process
        # This process only embeds; the step loop has its own process and threads. One thread:
        # a two-thread OpenMP pool stalls at every barrier while the engine holds a core
        # (an embedding's p99 went from 12 ms to 515 ms beside a busy job).
        torch.set_num_threads(1)
        embedder = None
        if config.embedding_model:
            model = SentenceEmbedder.load(config.embedding_model, config.device, DTYPES[config.embedding_dtype])
            embedder = EmbeddingBatcher(model)
    except Exception as e:  # any load failure is fatal and must say why
        print(f"triage engine: cannot start: {e}", file=sys.stderr)
        if engine is not None:
            engine.stop()
        sock.close()
        return 1
    assert config.served_model_name is not None
    app = create_app(engine, model_name=config.served_model_name, embedder=embedder, dev_routes=args.dev_mode)
    host, port = sock.getsockname()[:2]
    # Idle connections kept 75 s, longer than clients keep theirs (router/config.py, keep_alive_s).
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_keep_alive=75))
    print(f"Triage engine listening on http://{host}:{port}", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
