"""The `triage` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from triage_router.router.config import ConfigError
from triage_router.router.config_loader import load_config, resolve_config_path
from triage_router.router.cli.engine_launcher import EngineProcess, require_engine_extra
from triage_router.router.http import tracing
from triage_router.router.http.server import StartupError, bind_socket, serve, url_of
from triage_router.router.cli.workers import reserve_port, serve_workers


def _serve(args: argparse.Namespace) -> int:
    # The router's own warnings (a backend marked down, a config reload) on stderr, with a time.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = resolve_config_path(args.config)
    try:
        config = load_config(path)
        host = args.host or config.server.host
        port = config.server.port if args.port is None else args.port
        workers = config.server.workers if args.workers is None else args.workers
        # With workers, only a check here (the parent makes no span): each worker sets up its own.
        tracing.configure_from_env()
        # Each worker binds the port itself; the parent holds it meanwhile.
        sock = reserve_port(host, port) if workers > 1 else bind_socket(host, port)
    except (ConfigError, StartupError) as error:
        print(f"triage: error: {error}", file=sys.stderr)
        return 2
    # Started once, here, before any worker: workers never launch engines.
    engines = [EngineProcess(backend) for backend in config.backends if backend.launch]
    try:
        for engine in engines:
            print(f"Starting engine {engine.backend.name}: {' '.join(engine.command)}", flush=True)
            engine.start()
        for engine in engines:
            engine.wait_ready(lambda waited, name=engine.backend.name: print(
                f"  still waiting for engine {name} ({waited:.0f} s; the first start converts the model)", flush=True))
        if workers > 1:
            return serve_workers(config, path, sock, workers)
        from triage_router.router.http.app import create_app  # after the checks: a bad config fails before litestar loads

        started = serve(
            create_app(config, config_path=path),
            sock,
            grace_s=config.server.shutdown_grace_s,
            keep_alive_s=config.server.keep_alive_s,
            header_timeout_s=config.server.header_timeout_s,
            max_header_bytes=config.server.max_header_bytes,
            on_ready=lambda: print(f"Triage listening on {url_of(sock)}", flush=True),
        )
    except StartupError as error:
        print(f"triage: error: {error}", file=sys.stderr)
        return 1
    finally:
        for engine in engines:
            engine.stop()
    if not started:
        print("triage: error: the server failed to start (see the log above)", file=sys.stderr)
        return 1
    return 0


def _exec_engine(engine_args: list[str]) -> int:
    """Our engine runs in its own process; the router never imports it."""
    try:
        require_engine_extra("`triage engine`")
    except StartupError as error:
        print(f"triage: error: {error}", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, "-m", "triage_router.engine_server", *engine_args])
    return 1  # not reached: execv replaces this process


def _simulate(simulate_args: list[str]) -> int:
    from triage_router.router.cli import simulate as simulator_cli

    parser = argparse.ArgumentParser(
        prog="triage simulate",
        description="Deterministic discrete-event simulation of scheduling policies on several replicas.",
    )
    simulator_cli.configure_parser(parser)
    return simulator_cli.run(parser.parse_args(simulate_args))


def _explain(explain_args: list[str]) -> int:
    from triage_router.router.cli import explain

    parser = argparse.ArgumentParser(prog="triage explain", description=(
        "What a running Triage would decide for a request (priority, predicted length, each "
        "backend's score, the placement), without sending it upstream."))
    explain.configure_parser(parser)
    return explain.run(parser.parse_args(explain_args))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="OpenAI-compatible LLM router.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the router")
    serve_cmd.add_argument("--config", help="path to config.toml (default: $TRIAGE_CONFIG or ./config.toml)")
    serve_cmd.add_argument("--host", help="address to listen on (default: server.host)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    serve_cmd.add_argument("--workers", type=_positive, help=(
        "router processes sharing the port, on Linux (default: server.workers, 1); docs/deploy.md says what "
        "each knows only for itself"))
    serve_cmd.set_defaults(run=_serve)
    # Listed for --help only: main() hands `simulate` and `engine` their own parsers, so
    # `triage serve` does not pay for importing the simulator at start-up.
    commands.add_parser("simulate", help="run the discrete-event scheduling simulator (policies/sim)")
    commands.add_parser("explain", help="what a running Triage would decide for a request, without sending it")
    # Listed for --help only: main() hands every argument after `engine` to the engine itself.
    commands.add_parser("engine", help="run Triage's own engine; `triage engine --help` lists its options")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["engine"]:
        return _exec_engine(argv[1:])
    if argv[:1] == ["simulate"]:
        return _simulate(argv[1:])
    if argv[:1] == ["explain"]:
        return _explain(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)
