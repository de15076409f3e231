"""`counterpoint eval`: run a task against a running server under several decoding methods, print one table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from . import report
from .readers import FORMATS, TaskError, read_task
from .runner import Client, MethodSpec, Options, run_method


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure accuracy and hallucination of decoding methods on a task",
                       description="Run a task file against a running counterpoint (or OpenAI-compatible) server "
                                   "under each decoding method and print score, 95% CI, tokens/s and the change "
                                   "against the baseline.")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (with or without /v1)")
    p.add_argument("--task", required=True, help="task file (JSONL, TruthfulQA mc_task.json, HaluEval, sycophancy)")
    p.add_argument("--format", choices=FORMATS, default="auto", help="task file format (default: detect)")
    p.add_argument("--methods", default="plain", help="comma-separated method names or labels (default: plain)")
    p.add_argument("--decoding", action="append", default=[], metavar="LABEL=JSON",
                   help='parameters of one method, e.g. cd=\'{"amateur": "layer:4"}\'; a "method" key makes LABEL '
                        "a new name for that method (repeatable)")
    p.add_argument("--model", help="model id (default: the server's first model)")
    p.add_argument("--json", dest="json_out", help="write the results (summary and per item) to this file")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=64, help="generation items (default 64)")
    p.add_argument("--match", choices=["contains", "exact"], default="contains",
                   help="generation items: how an answer matches a reference (default contains)")
    p.add_argument("--baseline", default="plain", help="the method label the change is measured against")
    p.add_argument("--retries", type=int, default=3, help="retries of a failed request (default 3)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    p.add_argument("--api-key", dest="api_key", help="bearer key (default: COUNTERPOINT_API_KEY or OPENAI_API_KEY)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=main)


def method_specs(methods: str, decoding: list[str]) -> list[MethodSpec]:
    """`--methods a,b` and `--decoding LABEL=JSON` -> one request `decoding` object per label."""
    params: dict[str, dict[str, Any]] = {}
    for entry in decoding:
        label, sep, text = entry.partition("=")
        try:
            value = json.loads(text) if sep else None
        except json.JSONDecodeError as exc:
            raise SystemExit(f"counterpoint eval: --decoding {label}: not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise SystemExit(f"counterpoint eval: --decoding wants LABEL=JSON-object, got {entry!r}")
        params[label.strip()] = value
    labels = [m.strip() for m in methods.split(",") if m.strip()]
    if not labels:
        raise SystemExit("counterpoint eval: --methods is empty")
    return [MethodSpec(label, {"method": label, **params.get(label, {})}) for label in labels]


def main(ns: argparse.Namespace) -> int:
    try:
        items = read_task(ns.task, ns.format)
    except (OSError, TaskError, ValueError) as exc:
        print(f"counterpoint eval: {exc}", file=sys.stderr)
        return 2
    items = items[: ns.limit] if ns.limit else items
    specs = method_specs(ns.methods, ns.decoding)
    try:
        model, runs = asyncio.run(_run(ns, items, specs))
    except httpx.HTTPError as exc:
        print(f"counterpoint eval: cannot reach {ns.url}: {exc}", file=sys.stderr)
        return 2
    summary = report.summarize(runs, ns.baseline)
    print(f"task {ns.task}: {len(items)} items, model {model}, {ns.url}")
    print(report.table(summary, ns.baseline))
    for line in report.notes(summary):
        print(line)
    if ns.json_out:
        doc = {"task": str(ns.task), "url": ns.url, "model": model, "items": len(items), "baseline": ns.baseline,
               "methods": summary,
               "results": {r.method.label: [vars(x) for x in r.results] for r in runs}}
        Path(ns.json_out).write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    return 0 if any(s["error"] is None for s in summary) else 1


async def _run(ns: argparse.Namespace, items, specs: list[MethodSpec]):
    base = ns.url.rstrip("/").removesuffix("/v1")
    key = ns.api_key or os.environ.get("COUNTERPOINT_API_KEY") or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=ns.concurrency, max_keepalive_connections=ns.concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=ns.timeout, limits=limits) as http:
        model = ns.model or await _first_model(http)
        client = Client(http, concurrency=ns.concurrency, retries=ns.retries)
        opts = Options(model=model, max_tokens=ns.max_tokens, match=ns.match)
        return model, [await run_method(client, items, spec, opts, ns.progress) for spec in specs]


async def _first_model(http: httpx.AsyncClient) -> str:
    r = await http.get("/v1/models")
    r.raise_for_status()
    return r.json()["data"][0]["id"]
