"""The `triage` command."""

from __future__ import annotations

import argparse
import sys

from router.config import ConfigError, load_config, resolve_config_path
from router.server import StartupError, bind_socket, serve, url_of


def _serve(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    try:
        config = load_config(path)
        host = args.host or config.server.host
        port = config.server.port if args.port is None else args.port
        sock = bind_socket(host, port)
    except (ConfigError, StartupError) as error:
        print(f"triage: error: {error}", file=sys.stderr)
        return 2
    from router.app import create_app  # after the checks: a bad config fails before litestar loads

    app = create_app(config)
    started = serve(
        app,
        sock,
        grace_s=config.server.shutdown_grace_s,
        on_ready=lambda: print(f"Triage listening on {url_of(sock)}", flush=True),
    )
    if not started:
        print("triage: error: the server failed to start (see the log above)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description="OpenAI-compatible LLM router.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the router")
    serve_cmd.add_argument("--config", help="path to config.toml (default: $TRIAGE_CONFIG or ./config.toml)")
    serve_cmd.add_argument("--host", help="address to listen on (default: server.host)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    serve_cmd.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
