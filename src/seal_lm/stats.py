"""Accuracies with 95% intervals: every number this project reports carries its sample size."""

from __future__ import annotations

import math
import random
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


@dataclass(frozen=True)
class PairedDifference:
    """Mean of A - B over the items both conditions answered, with a 95% interval from a bootstrap that
    resamples contexts (the items of one context are not independent) and a two-sided p-value from flipping
    the sign of each context's differences (the paired randomization test)."""

    mean: float
    low: float
    high: float
    p: float
    contexts: int
    items: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{100 * self.mean:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}], p={self.p:.3f}"


def paired_difference(per_context: Sequence[Sequence[float]], resamples: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    """`per_context[i]` holds the differences A - B of context i's items. The estimate weighs every item
    alike; the bootstrap draws contexts with replacement; the randomization test flips each context's
    differences together. Seeded, so the same records give the same interval."""
    groups = [list(d) for d in per_context if len(d)]
    items = sum(len(g) for g in groups)
    if not groups:
        nan = float("nan")
        return PairedDifference(nan, nan, nan, nan, 0, 0)
    sums, sizes = [sum(g) for g in groups], [len(g) for g in groups]
    mean = sum(sums) / items
    rng = random.Random(seed)
    n = len(groups)
    boot = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        boot.append(sum(sums[i] for i in picks) / sum(sizes[i] for i in picks))
    boot.sort()
    low, high = boot[int(0.025 * resamples)], boot[min(resamples - 1, int(0.975 * resamples))]
    extreme = sum(abs(sum(s if rng.random() < 0.5 else -s for s in sums)) >= abs(sum(sums)) - 1e-12
                  for _ in range(resamples))
    return PairedDifference(mean, low, high, (extreme + 1) / (resamples + 1), n, items)
