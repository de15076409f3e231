"""Statistics of an A/B experiment from outcome-log rows: per-arm summaries and arm-vs-control tests.

Feedback means come with a 95% confidence interval from Student's t distribution; two arms differ
significantly when Welch's t-test (unequal variances) gives p < 0.05 after a Bonferroni correction for the
number of arms compared with the control.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
PERCENTILES = (50, 90, 99)


@dataclass
class Row:
    """What the report needs of one logged completion."""

    experiment: str
    arm: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency: float
    ttft: float | None
    score: float | None  # feedback score, None when none was given


@dataclass
class MeanCI:
    n: int
    mean: float | None
    low: float | None
    high: float | None


@dataclass
class ArmSummary:
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    latency: dict[str, float | None]  # "p50", "p90", "p99" in seconds
    ttft: dict[str, float | None]
    feedback: MeanCI


@dataclass
class Comparison:
    arm: str
    control: str
    difference: float | None  # arm mean - control mean
    p_value: float | None  # Welch's t-test, two-sided; None with fewer than two scores on a side
    p_adjusted: float | None  # Bonferroni over the arms compared with the control
    significant: bool


@dataclass
class ExperimentReport:
    control: str
    arms: dict[str, ArmSummary] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)


def mean_ci(values: list[float], level: float = LEVEL) -> MeanCI:
    n = len(values)
    if n == 0:
        return MeanCI(0, None, None, None)
    mean = float(np.mean(values))
    if n == 1:
        return MeanCI(1, mean, None, None)
    half = stats.t.ppf((1 + level) / 2, n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return MeanCI(n, mean, mean - half, mean + half)


def welch_p(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    if np.var(a) == 0 and np.var(b) == 0:  # no spread: equal means are no evidence, different ones are
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{q}": None for q in PERCENTILES}
    return {f"p{q}": float(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def summarize(rows: list[Row]) -> ArmSummary:
    ok = [r for r in rows if r.status == 200]
    return ArmSummary(requests=len(rows), errors=len(rows) - len(ok),
                      prompt_tokens=sum(r.prompt_tokens for r in ok),
                      completion_tokens=sum(r.completion_tokens for r in ok),
                      latency=percentiles([r.latency for r in ok]),
                      ttft=percentiles([r.ttft for r in ok if r.ttft is not None]),
                      feedback=mean_ci([r.score for r in rows if r.score is not None]))


def pick_control(arms: list[str]) -> str:
    return "control" if "control" in arms else min(arms)


def report(rows: Iterable[Row], controls: dict[str, str] | None = None) -> dict[str, ExperimentReport]:
    by_arm: dict[str, dict[str, list[Row]]] = {}
    for r in rows:
        by_arm.setdefault(r.experiment, {}).setdefault(r.arm, []).append(r)
    out = {}
    for name, arms in sorted(by_arm.items()):
        control = (controls or {}).get(name) or pick_control(list(arms))
        rep = ExperimentReport(control=control, arms={a: summarize(rs) for a, rs in sorted(arms.items())})
        scores = {a: [r.score for r in rs if r.score is not None] for a, rs in arms.items()}
        others = [a for a in sorted(arms) if a != control]
        for arm in others:
            p = welch_p(scores[arm], scores.get(control, []))
            mean_a, mean_c = rep.arms[arm].feedback.mean, rep.arms[control].feedback.mean if control in arms else None
            adjusted = None if p is None else min(1.0, p * len(others))
            rep.comparisons.append(Comparison(arm, control, None if mean_a is None or mean_c is None
                                              else mean_a - mean_c, p, adjusted,
                                              adjusted is not None and adjusted < ALPHA))
        out[name] = rep
    return out


def as_json(reports: dict[str, ExperimentReport]) -> dict[str, Any]:
    return {"confidence_level": LEVEL, "alpha": ALPHA, "test": "welch_t_bonferroni",
            "experiments": {name: asdict(rep) for name, rep in reports.items()}}
