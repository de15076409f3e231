"""95% confidence intervals: Wilson score intervals for 0/1 metrics, percentile bootstrap for the rest,
and a paired bootstrap for the difference between two methods over the same items.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
NUM_RESAMPLES = 2000


def is_binary(values: list[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def interval(values: list[float]) -> tuple[float, float]:
    """95% CI of the mean: Wilson for 0/1 values, percentile bootstrap otherwise."""
    if not values:
        return math.nan, math.nan
    if is_binary(values):
        return wilson(int(sum(values)), len(values))
    return bootstrap(values)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap(values: list[float], seed: int = 0) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)  # [n]
    idx = np.random.default_rng(seed).integers(0, len(x), size=(NUM_RESAMPLES, len(x)))  # [R, n]
    means = x[idx].mean(axis=1)  # [R]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_delta(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """mean(a - b) with a percentile-bootstrap 95% CI, resampling items (a[i] and b[i] are the same item)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)  # [n]
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap(d.tolist(), seed)
    return float(d.mean()), lo, hi
