"""The order training sees its examples in: batches of similar length, "not covered" examples spread out.

Grouping batches by length saves padding (a batch costs as much as its longest example). The
sampler that ships with transformers sorts megabatches (up to 50 batches, at most a quarter of the
data set) by length, and in a RAFT set the short examples are the "not covered" ones (no oracle
document, a one-line reply). A 15-minute run sees one or two megabatches, and the TF Hub run ended
on a stretch of abstentions and collapsed to answering "Not covered" to everything
(docs/retraining.md, "why the recipe collapsed"; bench/order.py replays the orders).

`stratified_order` keeps both properties apart: the abstention examples are first spread evenly
over the epoch, and only then are examples grouped by length, within windows of a few batches.
Any stretch of training then holds about the data set's share of abstentions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ragtune.llm.prompting import NOT_COVERED

ORDERS = ("stratified", "length", "random")


def abstains(completion: str) -> bool:
    """Whether a RAFT target is the "not covered" reply."""
    return NOT_COVERED.lower() in completion.lower()


def spread(common: list, rare: list) -> list:
    """Both lists merged so that each falls at evenly spaced positions (each list's own order kept)."""
    keyed = [((k + 0.5) / len(common), 0, k) for k in range(len(common))]
    keyed += [((k + 0.5) / len(rare), 1, k) for k in range(len(rare))]
    return [(rare if side else common)[k] for _, side, k in sorted(keyed)]


def stratified_order(lengths: Sequence[int], abstain: Sequence[bool], batch_size: int, seed: int, window: int = 8) -> list[int]:
    """A permutation of the example indices: abstentions spread evenly, then length-grouped in windows.

    Each window of `window` batches is sorted by length and cut into batches. A window's batches of
    abstentions only are spread among its other batches (both shuffled first), so two of them meet
    only across a window boundary while abstentions are under half the data. A short last batch
    stays last, so batch boundaries in the returned order are every `batch_size` examples.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if len(lengths) != len(abstain):
        raise ValueError(f"{len(lengths)} lengths for {len(abstain)} examples")
    rng = random.Random(seed)
    answers = [i for i, a in enumerate(abstain) if not a]
    abstentions = [i for i, a in enumerate(abstain) if a]
    rng.shuffle(answers)
    rng.shuffle(abstentions)
    merged = spread(answers, abstentions)
    span = batch_size * max(window, 1)
    order: list[int] = []
    for start in range(0, len(merged), span):
        chunk = sorted(merged[start : start + span], key=lambda i: lengths[i], reverse=True)
        batches = [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        pure = [b for b in batches if len(b) == batch_size and all(abstain[i] for i in b)]
        mixed = [b for b in batches if len(b) == batch_size and not all(abstain[i] for i in b)]
        rng.shuffle(pure)
        rng.shuffle(mixed)
        short = [b for b in batches if len(b) < batch_size]
        order += [i for b in spread(mixed, pure) + short for i in b]
    return order


def longest_run(flags: Sequence[bool], batch_size: int) -> int:
    """The most consecutive batches made only of flagged examples (how long training sees one target)."""
    best = run = 0
    for start in range(0, len(flags), batch_size):
        run = run + 1 if all(flags[start : start + batch_size]) else 0
        best = max(best, run)
    return best
