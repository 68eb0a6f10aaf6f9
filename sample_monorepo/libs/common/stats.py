"""Descriptive statistics over plain lists of floats (deterministic, no numpy)."""

from __future__ import annotations

import math


def mean(values: list[float]) -> float:
    if not values:
        raise ValueError("mean() of an empty list")
    return math.fsum(values) / len(values)


def stdev(values: list[float]) -> float:
    """Population standard deviation."""
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def clip(values: list[float], lo: float, hi: float) -> list[float]:
    return [min(max(v, lo), hi) for v in values]


def drop_invalid(values: list[float]) -> list[float]:
    """Drop NaN and infinite values."""
    return [v for v in values if math.isfinite(v)]


def rmse(actual: list[float], predicted: list[float]) -> float:
    if len(actual) != len(predicted):
        raise ValueError("rmse() of lists of different lengths")
    return math.sqrt(math.fsum((a - p) ** 2 for a, p in zip(actual, predicted)) / len(actual))
