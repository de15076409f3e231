"""`counterpoint chat`: an interactive streaming chat in the terminal.

With `--show-contrast` the request asks for diagnostics: each streamed choice then carries
`diagnostics: {"changed": [bool per token], "divergence": [JSD per token]}`, and the text of tokens whose
choice the contrast changed is marked (reverse video on a terminal, `[[...]]` otherwise). A summary line
follows each answer; a method without a contrast view (plain) reports none.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import decoding as dec
from .cli import add_server_args
from .client import Client, CounterpointError

HELP = "commands: /reset clears the conversation, /method SPEC switches decoding, /exit quits"


def mark(text: str, tty: bool) -> str:
    return f"\x1b[7m{text}\x1b[0m" if tty else f"[[{text}]]"


def render_choice(choice: dict[str, Any], tty: bool) -> tuple[str, list[bool], list[float]]:
    """A streamed chunk's choice -> (text to print, per-token changed flags, per-token divergences)."""
    text = (choice.get("delta") or {}).get("content") or ""
    diag = choice.get("diagnostics") or {}
    changed, divergence = diag.get("changed") or [], diag.get("divergence") or []
    return (mark(text, tty) if any(changed) and text else text), changed, divergence


def diagnostics_line(changed: list[bool], divergence: list[float]) -> str:
    if not changed:
        return "contrast: the server returned no diagnostics"
    mean = sum(divergence) / len(divergence) if divergence else 0.0
    return f"contrast changed {sum(changed)} of {len(changed)} token(s), mean divergence {mean:.4f}"


def reply(client: Client, messages: list[dict], args: argparse.Namespace, decoding: Any, out=None) -> str:
    out = out or sys.stdout
    tty = out.isatty()
    text, changed, divergence = [], [], []
    for chunk in client.chat_stream(messages, model=args.model, decoding=decoding, temperature=args.temperature,
                                    max_tokens=args.max_tokens):
        for choice in chunk.model_dump()["choices"]:
            shown, flags, divs = render_choice(choice, tty)
            changed += flags
            divergence += divs
            text.append(choice["delta"].get("content") or "")
            out.write(shown if args.show_contrast else text[-1])
            out.flush()
    out.write("\n")
    if args.show_contrast:
        out.write(f"  ({diagnostics_line(changed, divergence)})\n")
    return "".join(text)


def with_diagnostics(decoding: dict[str, Any], on: bool) -> dict[str, Any]:
    return {**decoding, "diagnostics": True} if on else decoding


def run(args: argparse.Namespace) -> int:
    decoding = with_diagnostics(dec.parse(args.method), args.show_contrast)
    history = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(history)
    print(HELP, file=sys.stderr)
    with Client(args.url, args.api_key) as client:
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if line in ("/exit", "/quit"):
                return 0
            if line == "/reset":
                messages = list(history)
                continue
            if line.startswith("/method "):
                decoding = with_diagnostics(dec.parse(line[8:].strip()), args.show_contrast)
                continue
            if not line:
                continue
            messages.append({"role": "user", "content": line})
            try:
                messages.append({"role": "assistant", "content": reply(client, messages, args, decoding)})
            except CounterpointError as exc:
                print(f"error: {exc.message}", file=sys.stderr)
                messages.pop()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="interactive streaming chat with a running server")
    add_server_args(p)
    p.add_argument("--method", default="plain", help='decoding spec: "plain", "cd:beta=1.0", "experiment:NAME"')
    p.add_argument("--system", help="a system message")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=512)
    p.add_argument("--show-contrast", dest="show_contrast", action="store_true",
                   help="mark the tokens the contrast changed (needs a server that returns diagnostics)")
    p.set_defaults(func=run)
