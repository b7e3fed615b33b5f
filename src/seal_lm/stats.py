"""Accuracies with 95% intervals: every number this project reports carries its sample size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def mean_with_interval(values: Sequence[float]) -> Estimate:
    """Mean and 95% interval: Wilson score for 0/1 outcomes, normal approximation otherwise.

    Wilson stays inside [0, 1] and is sensible for the small samples a CPU run produces.
    """
    n = len(values)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = sum(values) / n
    if all(v in (0.0, 1.0) for v in values):
        denom = 1 + Z95**2 / n
        centre = (mean + Z95**2 / (2 * n)) / denom
        half = Z95 * math.sqrt(mean * (1 - mean) / n + Z95**2 / (4 * n * n)) / denom
        return Estimate(mean, max(0.0, centre - half), min(1.0, centre + half), n)
    if n == 1:  # one graded value says nothing about its spread
        return Estimate(mean, 0.0, 1.0, 1)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z95 * math.sqrt(var / n)
    return Estimate(mean, max(0.0, mean - half), min(1.0, mean + half), n)
