"""The report's statistics on data whose answers are known by hand."""

from __future__ import annotations

import math

import pytest

from counterpoint.clients.ab_stats import Row, mean_ci, percentiles, report, welch_p


def rows(arm: str, scores: list[float | None], latency: float = 1.0, status: int = 200) -> list[Row]:
    return [Row("exp", arm, status, 10, 20, latency + i, 0.1, s) for i, s in enumerate(scores)]


def test_mean_ci_by_hand():
    ci = mean_ci([1, 2, 3, 4, 5])
    # mean 3, sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.7764451
    half = 2.7764451 * math.sqrt(0.5)
    assert ci.n == 5 and ci.mean == 3
    assert ci.low == pytest.approx(3 - half, abs=1e-6) and ci.high == pytest.approx(3 + half, abs=1e-6)
    assert mean_ci([]).mean is None and mean_ci([2.0]).low is None


def test_welch_by_hand():
    # equal variances 2.5, n 5 each: t = -5 / sqrt(0.5 + 0.5) = -5, df = 8; two-sided p = 0.00105
    assert welch_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(0.0010528, rel=1e-3)
    assert welch_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert welch_p([1], [2, 3]) is None
    assert welch_p([1, 1], [0, 0]) == 0.0 and welch_p([1, 1], [1, 1]) == 1.0


def test_percentiles_linear():
    assert percentiles([1, 2, 3, 4, 5]) == {"p50": 3.0, "p90": pytest.approx(4.6), "p99": pytest.approx(4.96)}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


def test_report_per_arm_and_significance():
    data = (rows("control", [1, 2, 3, 4, 5]) + rows("treatment", [6, 7, 8, 9, 10])
            + rows("similar", [1, 2, 3, 4, 6]) + rows("control", [None], status=429))
    rep = report(data)["exp"]
    assert rep.control == "control" and list(rep.arms) == ["control", "similar", "treatment"]
    c = rep.arms["control"]
    assert (c.requests, c.errors, c.prompt_tokens, c.completion_tokens) == (6, 1, 50, 100)
    assert c.latency["p50"] == 3.0 and c.feedback.n == 5 and c.feedback.mean == 3
    by_arm = {x.arm: x for x in rep.comparisons}
    assert by_arm["treatment"].difference == 5 and by_arm["treatment"].significant
    assert by_arm["treatment"].p_adjusted == pytest.approx(2 * 0.0010528, rel=1e-3)  # Bonferroni over 2 arms
    assert not by_arm["similar"].significant and by_arm["similar"].difference == pytest.approx(0.2)


def test_no_feedback_is_not_significant():
    rep = report(rows("a", [None, None]) + rows("b", [None]))["exp"]
    assert rep.control == "a" and rep.comparisons[0].p_value is None and not rep.comparisons[0].significant
