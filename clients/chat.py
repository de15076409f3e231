"""`counterpoint chat`: an interactive streaming chat in the terminal.

With `--show-contrast` the request asks for diagnostics (and per-token logprobs, which carry the token
texts), and the tokens the contrast changed are marked: reverse video on a terminal, `[[...]]` otherwise.
Where the server flags tokens is read from, in order: a `contrast_changed` boolean on each
`logprobs.content` entry, then on the chunk's delta or choice. A server that sends no flags gets plain
text, and a summary line shows whatever per-choice diagnostics it did return.
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


def render_choice(choice: dict[str, Any], tty: bool) -> tuple[str, int]:
    """A streamed chunk's choice -> (text to print, tokens marked as changed by the contrast)."""
    entries = (choice.get("logprobs") or {}).get("content") or []
    if any("contrast_changed" in e for e in entries):
        parts = [mark(e["token"], tty) if e.get("contrast_changed") else e["token"] for e in entries]
        return "".join(parts), sum(bool(e.get("contrast_changed")) for e in entries)
    text = (choice.get("delta") or {}).get("content") or ""
    flag = (choice.get("delta") or {}).get("contrast_changed", choice.get("contrast_changed"))
    return (mark(text, tty), 1) if flag and text else (text, 0)


def diagnostics_line(choice_diag: Any, decoding: dict[str, Any] | None, marked: int) -> str:
    diag = choice_diag if choice_diag is not None else (decoding or {}).get("diagnostics")
    if isinstance(diag, list):
        diag = diag[0] if diag else None
    if isinstance(diag, dict):
        return "contrast: " + ", ".join(f"{k} {v}" for k, v in diag.items())
    if marked:
        return f"contrast changed {marked} token(s)"
    return "contrast: the server returned no diagnostics"


def reply(client: Client, messages: list[dict], args: argparse.Namespace, decoding: Any, out=None) -> str:
    out = out or sys.stdout
    tty = out.isatty()
    extra = {"logprobs": True} if args.show_contrast else {}
    text, marked, resolved, choice_diag = [], 0, None, None
    for chunk in client.chat_stream(messages, model=args.model, decoding=decoding, temperature=args.temperature,
                                    max_tokens=args.max_tokens, **extra):
        resolved = resolved or (chunk.decoding.model_dump() if chunk.decoding else None)
        for choice in chunk.model_dump()["choices"]:
            shown, n = render_choice(choice, tty) if args.show_contrast else (choice["delta"].get("content") or "", 0)
            marked += n
            choice_diag = choice.get("diagnostics", choice_diag)
            text.append(choice["delta"].get("content") or "")
            out.write(shown)
            out.flush()
    out.write("\n")
    if args.show_contrast:
        out.write(f"  ({diagnostics_line(choice_diag, resolved, marked)})\n")
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
