"""`counterpoint compare`: one prompt under several decoding methods, side by side, with latency.

Methods run one after another (so one does not slow the other down), each streamed to measure the time
to the first token. A method the server refuses shows its error in its column.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import decoding as dec
from .cli import add_server_args
from .client import Client, CounterpointError


@dataclass
class Result:
    spec: str  # as given on the command line
    decoding: dict[str, Any] | None  # as the server resolved it
    text: str
    ttft: float | None  # seconds
    latency: float  # seconds
    completion_tokens: int
    error: str | None = None


def run_one(client: Client, spec: str, messages: list[dict], args: argparse.Namespace) -> Result:
    started, ttft, parts, resolved, tokens = time.monotonic(), None, [], None, 0
    try:
        for chunk in client.chat_stream(messages, model=args.model, decoding=dec.parse(spec),
                                        temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed):
            resolved = resolved or (chunk.decoding.model_dump(exclude_none=True) if chunk.decoding else None)
            for choice in chunk.choices:
                if choice.delta.content:
                    ttft = ttft if ttft is not None else time.monotonic() - started
                    parts.append(choice.delta.content)
            tokens = chunk.usage.completion_tokens if chunk.usage else tokens
    except (CounterpointError, ValueError) as exc:
        return Result(spec, resolved, "".join(parts), ttft, time.monotonic() - started, tokens,
                      getattr(exc, "message", str(exc)))
    return Result(spec, resolved, "".join(parts), ttft, time.monotonic() - started, tokens)


def side_by_side(results: list[Result], width: int) -> str:
    col = max(20, (width - 3 * (len(results) - 1)) // max(1, len(results)))
    heads = [[r.spec, (f"{r.latency:.2f}s total, ttft {'-' if r.ttft is None else f'{r.ttft:.2f}s'}, "
                       f"{r.completion_tokens} tok")] for r in results]
    bodies = [textwrap.wrap(f"ERROR: {r.error}" if r.error else r.text, col) or [""] for r in results]
    cells = [[line for h in head for line in textwrap.wrap(h, col)] + ["-" * col] + body
             for head, body in zip(heads, bodies)]
    height = max(len(c) for c in cells)
    return "\n".join(" | ".join((c[i] if i < len(c) else "").ljust(col) for c in cells).rstrip()
                     for i in range(height))


def run(args: argparse.Namespace) -> int:
    messages = [{"role": "user", "content": args.prompt}]
    with Client(args.url, args.api_key) as client:
        results = [run_one(client, spec, messages, args) for spec in args.method or ["plain"]]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(side_by_side(results, args.width or shutil.get_terminal_size((160, 24)).columns))
    return 0 if all(r.error is None for r in results) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the same prompt under several decoding methods, side by side")
    add_server_args(p)
    p.add_argument("prompt", help="the user message")
    p.add_argument("-m", "--method", action="append",
                   help='decoding spec, repeatable: "plain", "dola:layers=high", "cd:amateur=layer:4"')
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, help="output width (default: the terminal's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
