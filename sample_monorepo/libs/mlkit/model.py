"""Ordinary least squares for one feature, in plain Python."""

from __future__ import annotations

from dataclasses import dataclass

from libs.common import stats


@dataclass(frozen=True)
class LinearModel:
    slope: float
    intercept: float

    def predict(self, xs: list[float]) -> list[float]:
        return [self.slope * x + self.intercept for x in xs]

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, params: dict[str, float]) -> "LinearModel":
        return cls(slope=float(params["slope"]), intercept=float(params["intercept"]))


def fit_linear(xs: list[float], ys: list[float]) -> LinearModel:
    """Fit `y = slope * x + intercept` by least squares (coefficients rounded to 6 places)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("fit_linear() needs two lists of equal length >= 2")
    mx, my = stats.mean(xs), stats.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    return LinearModel(slope=round(slope, 6), intercept=round(my - slope * mx, 6))
