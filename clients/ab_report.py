"""`counterpoint ab-report`: per experiment and arm, what each arm cost and how its answers were rated."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # scipy loads only when a report is made, not on every `counterpoint` command
    from .ab_stats import ExperimentReport, Row

QUERY = """
SELECT c.experiment, c.arm, c.status, c.prompt_tokens, c.completion_tokens, c.latency, c.ttft, f.score
FROM completions c LEFT JOIN feedback f ON f.completion_id = c.id
WHERE c.experiment IS NOT NULL AND c.arm IS NOT NULL
"""


def load_rows(url: str, experiment: str | None = None) -> list[Row]:
    """The experiment rows of the log at `url` (a SQLite path, or a PostgreSQL URL)."""
    from counterpoint.server.outcomes import Database

    from .ab_stats import Row
    db = Database(url, create=False)
    try:
        query, args = (QUERY + " AND c.experiment = ?", (experiment,)) if experiment else (QUERY, ())
        return [Row(*r) for r in db.run(query, args)]
    finally:
        db.close()


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render(reports: dict[str, ExperimentReport]) -> str:
    if not reports:
        return "no experiment traffic in the outcome log"
    lines = []
    head = (f"{'arm':<16}{'requests':>9}{'errors':>7}{'tokens in/out':>16}{'latency p50/p90/p99 s':>24}"
            f"{'ttft p50 s':>11}{'feedback (n)':>14}{'95% CI':>18}")
    for name, rep in reports.items():
        lines += [f"experiment {name} (control: {rep.control})", head]
        for arm, s in rep.arms.items():
            lat = "/".join(_fmt(s.latency[k], 2) for k in ("p50", "p90", "p99"))
            fb = s.feedback
            ci = f"[{_fmt(fb.low)}, {_fmt(fb.high)}]" if fb.low is not None else "-"
            lines.append(f"{arm:<16}{s.requests:>9}{s.errors:>7}{f'{s.prompt_tokens}/{s.completion_tokens}':>16}"
                         f"{lat:>24}{_fmt(s.ttft['p50'], 3):>11}{f'{_fmt(fb.mean)} ({fb.n})':>14}{ci:>18}")
        for c in rep.comparisons:
            verdict = ("not enough feedback to compare" if c.p_value is None else
                       f"difference {c.difference:+.3f}, p = {c.p_value:.4g} (adjusted {c.p_adjusted:.4g}): "
                       + ("SIGNIFICANT" if c.significant else "not significant"))
            lines.append(f"  {c.arm} vs {c.control}: {verdict}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _log_url(args: argparse.Namespace) -> str:
    if args.log:
        return args.log
    from counterpoint.server.config import load_settings
    url = load_settings(args.config).outcome_log
    if not url:
        raise SystemExit("ab-report: no outcome log; give --log PATH or a --config with `outcome_log`")
    return url


def run(args: argparse.Namespace) -> int:
    try:
        rows = load_rows(_log_url(args), args.experiment)
    except Exception as exc:  # noqa: BLE001  (a missing file, a bad URL, any database error: one line, exit 1)
        print(f"ab-report: {exc}", file=sys.stderr)
        return 1
    from .ab_stats import as_json, report
    reports = report(rows, {args.experiment: args.control} if args.experiment and args.control else None)
    print(json.dumps(as_json(reports), indent=2) if args.json else render(reports))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ab-report", help="A/B experiment report from the outcome log")
    p.add_argument("--log", help="the outcome log (SQLite path or PostgreSQL URL); default: `outcome_log` of "
                   "--config")
    p.add_argument("--config", help="the server's TOML config file")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--control", help="the arm the others are compared with (with --experiment; default: "
                   "the arm named `control`, else the first by name)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
