"""`counterpoint` sub-commands that talk to a running server over HTTP.

Each command module adds its parser in `register` and sets `func`, which `main` calls with the parsed args.
"""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    """Add the client commands to the `counterpoint` parser."""
    from . import ab_report, chat, compare
    from .eval import cli as eval_cli
    for module in (chat, compare, ab_report, eval_cli):
        module.register(sub)


def add_server_args(p: argparse.ArgumentParser) -> None:
    """--url, --api-key and --model, shared by the commands that call a server."""
    p.add_argument("--url", default=os.environ.get("COUNTERPOINT_URL", "http://127.0.0.1:8000"),
                   help="the server (default $COUNTERPOINT_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", dest="api_key", default=os.environ.get("COUNTERPOINT_API_KEY"),
                   help="bearer key (default $COUNTERPOINT_API_KEY)")
    p.add_argument("--model", help="model id (default: the server's first model)")
