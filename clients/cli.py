"""`counterpoint` sub-commands that talk to a running server over HTTP.

Each command module adds its parser in `register` and sets `func`, which `main` calls with the parsed args.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the client commands to the `counterpoint` parser."""
    from .eval import cli as eval_cli
    eval_cli.register(sub)
