"""95% intervals for evaluation figures: two candidates paired over the same items, or one candidate alone.

    d = paired_difference({("q1", "answer"): 1.0, ("q2", "answer"): 0.0},
                          {("q1", "answer"): 0.0, ("q2", "answer"): 0.0})
    d.diff, d.low, d.high, d.n   # challenger - incumbent, its interval, pairs compared
    mean_interval([1, 0, 1, 1])  # one candidate's mean: Wilson for 0/1 values, bootstrap otherwise

The paired difference is a percentile bootstrap over items: resample the items (both candidates' values
together), take the mean difference each time, read the 2.5th and 97.5th percentiles. Why: the
per-item differences are -1/0/+1 for most metrics and continuous for token F1, on a few dozen to a
few hundred items, where a normal approximation misleads; the bootstrap treats every metric alike and
keeps the pairing (the item's difficulty cancels out). An exact paired method exists only for 0/1
metrics (Newcombe's interval for matched pairs). The seed is fixed, so the same rows always give
the same interval, and a gate decided again later from a recorded summary agrees with the first.
Known weakness: on very few items the percentile bootstrap is too narrow; the gate's minimum item
counts keep it away from that regime.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Hashable, Iterable

import numpy as np

SEED = 0
RESAMPLES = 2000
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
METHOD = f"paired percentile bootstrap over items, {RESAMPLES} resamples, seed {SEED}"


@dataclass(frozen=True)
class PairedDifference:
    challenger: float  # mean over the paired items
    incumbent: float
    diff: float  # challenger - incumbent
    low: float  # 95% interval of diff
    high: float
    n: int  # items both candidates were scored on

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def bootstrap_mean(values: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (resampled with replacement, fixed seed)."""
    if np.all(values == values[0]):  # nothing varies: every resample has the same mean
        return float(values[0]), float(values[0])
    picks = np.random.default_rng(SEED).integers(0, len(values), size=(RESAMPLES, len(values)))
    low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def paired_difference(challenger: dict[Hashable, float], incumbent: dict[Hashable, float]) -> PairedDifference | None:
    """Challenger minus incumbent over the items both were scored on (keys such as (item_id, kind));
    None when there is no such item: not measured."""
    keys = sorted(set(challenger) & set(incumbent), key=repr)  # a fixed order: the resampled indices mean the same items
    if not keys:
        return None
    new = np.array([float(challenger[k]) for k in keys])
    old = np.array([float(incumbent[k]) for k in keys])
    low, high = bootstrap_mean(new - old)
    return PairedDifference(challenger=float(new.mean()), incumbent=float(old.mean()), diff=float((new - old).mean()),
                            low=low, high=high, n=len(keys))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion: sound near 0 and 1 and on few items, unlike mean ± 1.96 se."""
    p, z2 = successes / n, Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Iterable[float]) -> Interval | None:
    """One candidate's mean with a 95% interval: Wilson when every value is 0 or 1, else the bootstrap;
    None for no values."""
    array = np.array([float(v) for v in values])
    if array.size == 0:
        return None
    if np.isin(array, (0.0, 1.0)).all():
        low, high = wilson(int(array.sum()), array.size)
    else:
        low, high = bootstrap_mean(array)
    return Interval(mean=float(array.mean()), low=low, high=high, n=int(array.size))
