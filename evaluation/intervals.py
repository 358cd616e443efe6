"""95% intervals for evaluation figures: two candidates paired over the same items, or one candidate alone.

    d = paired_difference({("q1", "answer"): 1.0, ("q2", "answer"): 0.0},
                          {("q1", "answer"): 0.0, ("q2", "answer"): 0.0})
    d.diff, d.low, d.high, d.n, d.method  # challenger - incumbent, its interval, pairs compared, "newcombe" or "bootstrap"
    newcombe_paired(b=12, c=1, a=8, d=9)   # the paired 2x2 table directly: (low, high)
    mean_interval([1, 0, 1, 1])            # one candidate's mean: Wilson for 0/1 values, bootstrap otherwise
    newcombe_independent(56, 70, 48, 80)   # two independent samples' proportions: (low, high) of p1 - p2

Most metrics are 0/1 per item (identifier match, citation accuracy, format validity, abstention,
adherence, false abstention). For them the paired difference is Newcombe's hybrid score interval for
paired proportions (Newcombe 1998, Statistics in Medicine 17:2635, method 10; the "square-and-add"
interval of Fagerland, Lydersen and Laake 2014, Statistics in Medicine 33:2850). From the paired table

                      incumbent 1   incumbent 0
    challenger 1           a             b        (b: items won)
    challenger 0           c             d        (c: items lost)

take the Wilson intervals (l1, u1) of p1 = (a+b)/n and (l2, u2) of p2 = (a+c)/n, and combine them with
the correlation phi of the two candidates' outcomes (ad - bc over the root of the marginal products,
with Newcombe's correction: ad - bc - n/2 when ad - bc > n/2, 0 when 0 <= ad - bc <= n/2):

    low  = (b - c)/n - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
    high = (b - c)/n + sqrt((p2 - l2)^2 - 2 phi (p2 - l2)(u1 - p1) + (u1 - p1)^2)

Why this one: the percentile bootstrap of the -1/0/+1 differences is too narrow when few items are
discordant (4 items won and none lost of 30 gave a lower bound of +0.033, though the exact sign test
on 4-0 has two-sided p = 0.125; with no discordant item at all it gave [0, 0]). Newcombe's interval
keeps close to 95% coverage on small samples in Newcombe's and Fagerland et al.'s evaluations, is
among the intervals Fagerland et al. recommend for paired proportions, has a closed form (deterministic,
nothing to seed), and stays a proper interval at 0 discordant items. The exact alternative, a
Clopper-Pearson interval on b/(b+c) mapped to the difference, is exact only for b/(b+c): mapped to the
difference it treats the discordant share (b+c)/n as known. Reference: Cavo et al.'s (2012) table a, b, c, d = 59, 6,
16, 80 gives -0.0621 [-0.1186, -0.0046] (Fagerland et al.; tests/test_gate.py checks it). Near the
boundary the interval is an approximate 95% interval, not an exact test: on 20-40 items it can clear
a small margin where the exact sign test has p just above 0.05 (5 won, 0 lost of 20: p = 0.0625).

Two independent samples (live traffic of two model versions in different periods: no item is answered
by both) use Newcombe's hybrid score interval for independent proportions (Newcombe 1998, Statistics in
Medicine 17:873, method 10): with the Wilson intervals (l1, u1) of p1 = x1/n1 and (l2, u2) of p2 = x2/n2,

    low  = p1 - p2 - sqrt((p1 - l1)^2 + (u2 - p2)^2)
    high = p1 - p2 + sqrt((u1 - p1)^2 + (p2 - l2)^2)

the paired formula with phi = 0. Newcombe's example 56/70 - 48/80 gives 0.2 [0.0524, 0.3339], and
10/10 - 0/10 gives [0.6075, 1] (his Table II; tests/test_live_report.py checks them). It keeps near 95%
coverage where the Wald interval (p1 - p2 +- 1.96 se) collapses at 0 or 1 successes.

Metrics with graded values (token F1) keep the percentile bootstrap over items: resample the items
(both candidates' values together), take the mean difference each time, read the 2.5th and 97.5th
percentiles; it keeps the pairing (the item's difficulty cancels out) and needs no model of the
values. The seed is fixed, so the same rows always give the same interval, and a gate decided again
later from a recorded summary agrees with the first. Known weakness: on few items it is too narrow;
the gate's minimum item counts keep it away from that regime.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

from evaluation.metrics import percentile

SEED = 0
RESAMPLES = 2000
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
METHOD = (
    "0/1 metrics: Newcombe's hybrid score interval for paired proportions (1998, method 10); "
    f"graded metrics: paired percentile bootstrap over items, {RESAMPLES} resamples, seed {SEED}"
)


@dataclass(frozen=True)
class PairedDifference:
    challenger: float  # mean over the paired items
    incumbent: float
    diff: float  # challenger - incumbent
    low: float  # 95% interval of diff
    high: float
    n: int  # items both candidates were scored on
    method: str = "bootstrap"  # "newcombe" (every value 0 or 1) or "bootstrap"

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
    means = values[picks].mean(axis=1).tolist()
    return percentile(means, 2.5), percentile(means, 97.5)


def newcombe_paired(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """95% interval of p1 - p2 = (b - c)/n for paired 0/1 outcomes: a both 1, b only the first (challenger) 1,
    c only the second 1, d both 0. Newcombe (1998) method 10; see the module docstring."""
    n = a + b + c + d
    if n <= 0 or min(a, b, c, d) < 0:
        raise ValueError(f"a paired table needs non-negative counts and at least one pair, got {a}, {b}, {c}, {d}")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n)
    l2, u2 = wilson(a + c, n)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0:  # one candidate is constant: no correlation to estimate
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / math.sqrt(margins)
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, p1 - p2 - below), min(1.0, p1 - p2 + above)


def newcombe_independent(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval (or another level, by `z`) of p1 - p2 = x1/n1 - x2/n2 for two independent samples of 0/1
    outcomes: Newcombe (1998) method 10, the square-and-add of the two Wilson intervals; see the module docstring."""
    if n1 <= 0 or n2 <= 0 or not (0 <= x1 <= n1 and 0 <= x2 <= n2):
        raise ValueError(f"two samples need 0 <= successes <= n and n >= 1, got {x1}/{n1} and {x2}/{n2}")
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def paired_difference(challenger: dict[Hashable, float], incumbent: dict[Hashable, float]) -> PairedDifference | None:
    """Challenger minus incumbent over the items both were scored on (keys such as (item_id, kind)):
    Newcombe's paired interval when every value is 0 or 1, else the bootstrap; None when there is no
    such item: not measured."""
    keys = sorted(set(challenger) & set(incumbent), key=repr)  # a fixed order: the resampled indices mean the same items
    if not keys:
        return None
    new = np.array([float(challenger[k]) for k in keys])
    old = np.array([float(incumbent[k]) for k in keys])
    if np.isin(new, (0.0, 1.0)).all() and np.isin(old, (0.0, 1.0)).all():
        won, lost = int(((new == 1) & (old == 0)).sum()), int(((new == 0) & (old == 1)).sum())
        both = int(((new == 1) & (old == 1)).sum())
        low, high = newcombe_paired(both, won, lost, len(keys) - both - won - lost)
        method = "newcombe"
    else:
        low, high = bootstrap_mean(new - old)
        method = "bootstrap"
    return PairedDifference(
        challenger=float(new.mean()),
        incumbent=float(old.mean()),
        diff=float((new - old).mean()),
        low=low,
        high=high,
        n=len(keys),
        method=method,
    )


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95% interval (or another level, by `z`) of a proportion: sound near 0 and 1 and on few
    items, unlike mean ± 1.96 se."""
    p, z2 = successes / n, z**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
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
