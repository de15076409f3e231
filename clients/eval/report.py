"""Method runs -> a summary (per method and metric: score, 95% CI, change against the baseline, tokens/s,
failed items) -> one printed table, or JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from . import stats
from .runner import MethodRun

METRIC_ORDER = ("mc1", "mc2", "accuracy", "hallucination", "sycophancy")


def summarize(runs: list[MethodRun], baseline: str | None = "plain") -> list[dict[str, Any]]:
    base = next((r for r in runs if r.method.label == baseline and _answered(r)), None)
    return [_summary(run, base) for run in runs]


def _answered(run: MethodRun) -> bool:
    return any(r.error is None for r in run.results)


def _summary(run: MethodRun, base: MethodRun | None) -> dict[str, Any]:
    failed = [r for r in run.results if r.error is not None]
    out: dict[str, Any] = {
        "method": run.method.label, "decoding": run.method.decoding, "resolved_decoding": run.resolved,
        "items": len(run.results),
        "failed": len(failed), "error": None, "tokens": run.tokens, "seconds": round(run.seconds, 3),
        "tokens_per_s": run.tokens / run.seconds if run.seconds > 0 and run.tokens else None, "metrics": {},
        "failures": [{"id": r.id, "error": r.error} for r in failed],
    }
    if not _answered(run):  # the server refused the method (or every request failed): an error row
        out["error"] = Counter(r.error for r in failed).most_common(1)[0][0] if failed else "no items"
        return out
    for name in _metric_names(run):
        values = {r.id: r.scores[name] for r in run.results if name in r.scores}
        score = sum(values.values()) / len(values)
        lo, hi = stats.interval(list(values.values()))
        m = {"n": len(values), "score": score, "ci": [lo, hi],
             "ci_method": "wilson" if stats.is_binary(list(values.values())) else "bootstrap",
             "delta": None, "delta_ci": None}
        if base is not None and base is not run:
            ref = {r.id: r.scores[name] for r in base.results if name in r.scores}
            ids = [i for i in values if i in ref]
            if ids:
                d, dlo, dhi = stats.paired_delta([values[i] for i in ids], [ref[i] for i in ids])
                m["delta"], m["delta_ci"], m["delta_n"] = d, [dlo, dhi], len(ids)
        out["metrics"][name] = m
    return out


def notes(summary: list[dict[str, Any]]) -> list[str]:
    """Methods the server answered under another method than asked (an A/B arm, or a server without `decoding`)."""
    out = []
    for s in summary:
        asked = s["decoding"].get("method")
        got = (s["resolved_decoding"] or {}).get("method", "plain")
        if s["error"] is None and asked and got != asked:
            out.append(f"note: {s['method']} was answered with method {got!r}, not {asked!r}")
    return out


def _metric_names(run: MethodRun) -> list[str]:
    seen = {name for r in run.results for name in r.scores}
    return [m for m in METRIC_ORDER if m in seen] + sorted(seen - set(METRIC_ORDER))


def table(summary: list[dict[str, Any]], baseline: str | None = "plain") -> str:
    head = ["method", "metric", "n", "score", "95% CI", f"Δ vs {baseline or '-'} [95% CI]", "tok/s", "failed"]
    rows, errors = [head], {}
    for s in summary:
        tps = "-" if s["tokens_per_s"] is None else f"{s['tokens_per_s']:.1f}"
        failed = f"{s['failed']}/{s['items']}"
        if s["error"] is not None:  # one line of its own, outside the columns
            errors[len(rows)] = f"error ({failed} failed): {_clip(s['error'], 100)}"
            rows.append([s["method"]])
            continue
        for k, (name, m) in enumerate(s["metrics"].items()):
            delta = "-" if m["delta"] is None else f"{m['delta']:+.3f} {_ci(m['delta_ci'], signed=True)}"
            rows.append([s["method"] if k == 0 else "", name, str(m["n"]), f"{m['score']:.3f}", _ci(m["ci"]),
                         delta, tps if k == 0 else "", failed if k == 0 else ""])
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for k, message in errors.items():
        lines[k] = f"{lines[k]}  {message}"
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ci(ci: list[float], signed: bool = False) -> str:
    if any(math.isnan(x) for x in ci):
        return "-"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
