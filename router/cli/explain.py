"""`triage explain`: what a running Triage would decide for a request, without sending it.

Reads a request body (a file, or standard input), sends it to the router's
POST /triage/explain/<path> (router/http/explain.py) with the given headers, and prints the
priority decision and its source, the predicted length, each backend's score or why it is not
eligible, and the placement. `--json` prints the router's answer as it came.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("body", nargs="?", default="-", help="file with the JSON request body (default: stdin)")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the running Triage (default: %(default)s)")
    parser.add_argument("--path", default="/v1/chat/completions", help="the API the request is for (default: %(default)s)")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="NAME: VALUE",
                        help="a request header, e.g. 'x-priority: 0' or 'authorization: Bearer sk-...'")
    parser.add_argument("--json", action="store_true", help="print the router's JSON answer")


def run(args: argparse.Namespace) -> int:
    body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
    headers = {"content-type": "application/json"}
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    try:
        answer = httpx.post(f"{args.url.rstrip('/')}/triage/explain{args.path}", content=body, headers=headers,
                            timeout=30)
    except httpx.HTTPError as error:
        print(f"triage explain: cannot reach {args.url}: {error}", file=sys.stderr)
        return 2
    if answer.status_code != 200:
        print(f"triage explain: the router refused the request ({answer.status_code}): {answer.text}", file=sys.stderr)
        return 1
    decision = answer.json()
    print(json.dumps(decision, indent=2) if args.json else render(decision))
    return 0


def render(decision: dict[str, Any]) -> str:
    priority, placement = decision["priority"], decision["placement"]
    lines = [f"request  {decision['request_id']}  model {decision['model']}"
             + (f" (served as {decision['routed_model']})" if decision["routed_model"] != decision["model"] else "")]
    level = f"priority {priority['level']}  from {priority['source']}"
    if priority["clamped_from"] is not None:
        level += f"  (asked {priority['clamped_from']}, clamped by the key's cap)"
    if priority["adjusted_by"]:
        level += f"  (moved by {', '.join(priority['adjusted_by'])})"
    lines.append(level)
    predicted = decision["predicted_output_tokens"]
    if predicted is not None:
        lines.append(f"length   prompt ~{decision['prompt_tokens']} tokens; output predicted median {predicted['median']}, "
                     f"high {predicted['high']}")
    if decision["session"]:
        lines.append(f"session  {decision['session']}")
    lines.append("backends")
    for candidate in decision["candidates"]:
        verdict = f"score {candidate['score']:.4g}" if candidate["eligible"] else "not eligible"
        lines.append(f"  {candidate['backend']:<20} {verdict:<16} {candidate['reason']}")
        if (cache := decision.get("cache", {}).get(candidate["backend"])) is not None:
            lines.append(f"  {'':<20} {'cache':<16} {cache['matched_tokens']} prompt tokens held "
                         f"({cache['share']:.0%}), by the {cache['source'].replace('_', ' ')} index")
    for name, why in decision["saturated"].items():
        lines.append(f"  {name:<20} {'saturated':<16} {why}")
    target = placement["backend"] or "(none: it would wait in the admission queue)"
    lines.append(f"placed   {target}  by {placement['policy']}: {placement['reason']}")
    return "\n".join(lines)
