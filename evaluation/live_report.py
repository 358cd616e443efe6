"""The live report: how each served model version does on real traffic, and where the documents fall short.

    report = live_report(day_records, low_similarity=0.35, embed=embedder.embed)
    report["versions"]   # one summary per (model_version, index_version): answers, rates, latency, similarity
    report["by_model"]   # the same per model version, index versions pooled (what the comparison reads)
    report["gaps"]       # coverage gaps: clusters of abstained, down-voted or poorly retrieved questions
    compare_periods(new_summary, old_summary, tolerance=0.05, min_answers=30)

It lives in `evaluation`, not `ragtune.behaviour`, because it is an evaluation of served versions built
on the evaluation layer's percentile (evaluation/metrics.py) and intervals (evaluation/intervals.py); the
core may not import those. Everything here is pure apart from the `embed` callable it is handed.

Only live answers count: a shadow answer (`shadow_of` set: the challenger answering off the request
path) was never shown to anyone, so it has no votes and must not dilute the served version's figures.

Rates are over answers. An answer's citation is valid when it cites at least one document and every
cited document is among the documents retrieved into its context (a citation outside the context is
made up). A fallback is the logged flag or the generator's fallback text (as the review queue reads
it). The top retrieval similarity is the best context chunk's cosine similarity to the question.

Coverage gaps are questions the documents did not serve: abstained on, down-voted, or retrieved
poorly (top similarity below `low_similarity`, or nothing retrieved). Their distinct texts (the last
MAX_GAP_QUESTIONS first asked) are embedded with the live embedder and grouped by scikit-learn's agglomerative
clustering, average linkage on cosine distance, cut where the mean similarity between two groups
falls below GAP_SIMILARITY: no cluster count to guess, and a paraphrase joins its question's group
(all-MiniLM-L6-v2 puts paraphrases at about 0.6-0.9 and unrelated questions below 0.3). The cap keeps
the pairwise distance matrix small (1000 questions: 4 MB) on a day of heavy traffic.

The comparison (`compare_periods`) sets a new champion's live period against the previous
champion's (`champion_periods` replays the registry's alias log, `registry.champion_at`, to tell which
version served when): independent samples (different questions, different days), so each rate's difference has
Newcombe's interval for independent proportions. A metric regressed when the whole 95% interval lies
beyond the tolerance on the worse side: the data say, with 95% confidence, that it got worse by more
than the tolerance. That is deliberately strict, since it may trigger an automatic rollback; below
`min_answers` on either side there is no verdict at all ("not enough evidence").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from statistics import NormalDist

import numpy as np

from evaluation.intervals import newcombe_independent
from evaluation.metrics import percentile
from ragtune.behaviour.answer_flags import flags, low_retrieval, top_similarity
from ragtune.registry import CHAMPION, champion_at

BASE = "base"  # model_version of answers from the base model (no champion)
NO_INDEX = "unknown"  # index_version when the record has none (logged before the column existed)
SIMILARITY_BINS = 10  # histogram of top similarity: ten bins of 0.1 over [0, 1]; negatives fall in the first
GAP_SIMILARITY = 0.6  # mean cosine similarity at which two groups of gap questions are one topic
MAX_GAP_QUESTIONS = 1000  # newest distinct gap questions clustered
GAP_EXAMPLES = 3
PERIOD_DAYS = 28  # each side of a champion comparison looks back at most this far
# rate metric -> (the flag it counts, +1 when higher is better, -1 when lower is better)
RATE_METRICS = {
    "up_rate": ("up", 1),
    "down_rate": ("down", -1),
    "fallback_rate": ("fallback", -1),
    "abstention_rate": ("abstained", -1),
    "valid_citation_rate": ("valid_citation", 1),
}
NOT_ENOUGH = "not enough evidence"
REGRESSION = "regression"
NO_REGRESSION = "no regression"


def live(records: list[dict]) -> list[dict]:
    """The answers people were shown: shadow answers left out."""
    return [r for r in records if r.get("shadow_of") is None]


def histogram(values: list[float], bins: int = SIMILARITY_BINS) -> list[int]:
    """Counts per bin of width 1/bins over [0, 1]; values outside are clamped into the end bins."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v * bins)))] += 1
    return counts


def summarise(records: list[dict]) -> dict:
    """Answers, counts and rates, latency p50/p95 (ms) and the top-similarity distribution of some live answers."""
    n = len(records)
    counts, known = Counter(), Counter()  # known: the answers a flag could be read on (its denominator)
    for record in records:
        seen = flags(record)
        counts.update(k for k, v in seen.items() if v)
        known.update(k for k, v in seen.items() if v is not None)
    latencies = [float(r["latency_ms"]) for r in records if r.get("latency_ms") is not None]
    similarities = [s for s in map(top_similarity, records) if s is not None]
    summary = {
        "answers": n,
        "counts": {flag: counts[flag] for flag, _ in RATE_METRICS.values()},
        "known": {flag: known[flag] for flag, _ in RATE_METRICS.values()},
    }
    summary.update({metric: counts[flag] / known[flag] if known[flag] else None for metric, (flag, _) in RATE_METRICS.items()})
    # declined below the relevance floor: shown, not compared between champions (a new floor moves it by design)
    summary["below_floor_rate"] = counts["below_floor"] / n if n else None
    summary.update(
        {
            "latency_p50_ms": percentile(latencies, 50) if latencies else None,
            "latency_p95_ms": percentile(latencies, 95) if latencies else None,
            "similarity_p10": percentile(similarities, 10) if similarities else None,
            "similarity_p50": percentile(similarities, 50) if similarities else None,
            "similarity_p90": percentile(similarities, 90) if similarities else None,
            "similarity_histogram": histogram(similarities),
            "similarity_missing": n - len(similarities),
        }
    )
    return summary


def version_of(record: dict) -> str:
    return record.get("model_version") or BASE


def per_version(records: list[dict]) -> list[dict]:
    """One summary per (model_version, index_version), most answers first."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        groups[(version_of(record), record.get("index_version") or NO_INDEX)].append(record)
    rows = [{"model_version": m, "index_version": i, **summarise(rs)} for (m, i), rs in groups.items()]
    return sorted(rows, key=lambda row: (-row["answers"], row["model_version"], row["index_version"]))


def by_model(records: list[dict]) -> dict[str, dict]:
    """One summary per model version, its index versions pooled."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[version_of(record)].append(record)
    return {version: summarise(rs) for version, rs in sorted(groups.items())}


def gap_reasons(record: dict, low_similarity: float) -> list[str]:
    """Why a live answer shows a coverage gap (empty: it does not)."""
    seen = {**flags(record), "low_retrieval": low_retrieval(record, low_similarity)}
    return [reason for reason in ("abstained", "below_floor", "down", "low_retrieval") if seen[reason]]


def cluster(vectors: np.ndarray, min_similarity: float = GAP_SIMILARITY) -> list[int]:
    """A cluster label per (normalised) vector: average-linkage agglomerative clustering on cosine distance,
    merging while the groups' mean similarity is at least `min_similarity`."""
    if len(vectors) < 2:
        return [0] * len(vectors)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=1.0 - min_similarity)
    return model.fit_predict(vectors).tolist()


def coverage_gaps(
    records: list[dict],
    low_similarity: float,
    embed: Callable[[list[str]], np.ndarray],
    min_similarity: float = GAP_SIMILARITY,
    max_questions: int = MAX_GAP_QUESTIONS,
) -> dict:
    """Clusters of the questions the documents did not serve, largest first: size (answers), reasons counted,
    up to GAP_EXAMPLES example questions (the most asked first)."""
    answers: Counter = Counter()  # gap question -> its gap answers (dict order: first asked first)
    reasons: dict[str, Counter] = defaultdict(Counter)
    for record in sorted(records, key=lambda r: r["ts"]):
        why = gap_reasons(record, low_similarity)
        if why:
            question = record["question"].strip()
            answers[question] += 1
            reasons[question].update(why)
    questions = list(answers)[-max_questions:]  # the most recently first-asked (records are sorted by time)
    labels = cluster(embed(questions), min_similarity) if questions else []
    members: dict[int, list[str]] = defaultdict(list)
    for question, label in zip(questions, labels, strict=True):
        members[label].append(question)
    clusters = []
    for group in members.values():
        examples = sorted(group, key=lambda q: (-answers[q], q))[:GAP_EXAMPLES]
        tally = sum((reasons[q] for q in group), Counter())
        clusters.append(
            {
                "size": sum(answers[q] for q in group),
                "questions": len(group),
                "reasons": dict(sorted(tally.items())),
                "examples": examples,
            }
        )
    clusters.sort(key=lambda c: (-c["size"], c["examples"][0]))
    return {"questions": len(answers), "clustered": len(questions), "clusters": clusters}


def live_report(records: list[dict], low_similarity: float, embed: Callable[[list[str]], np.ndarray] | None = None) -> dict:
    """The report of one period's records: per version and index, per model version, and the coverage gaps
    (None without `embed`)."""
    shown = live(records)
    return {
        "answers": len(shown),
        "shadow_answers": len(records) - len(shown),
        "versions": per_version(shown),
        "by_model": by_model(shown),
        "gaps": coverage_gaps(shown, low_similarity, embed) if embed is not None else None,
    }


def compare_periods(new: dict, old: dict, tolerance: float, min_answers: int) -> dict:
    """A new champion's summary against the previous champion's: per rate metric new, old, the difference
    (new - old), its 95% interval and whether it is a regression beyond `tolerance`; no metrics below
    `min_answers` on either side."""
    result = {"new_answers": new["answers"], "old_answers": old["answers"], "tolerance": tolerance}
    if min(new["answers"], old["answers"]) < max(1, min_answers):
        return {**result, "verdict": NOT_ENOUGH, "regressions": [], "metrics": {}}
    metrics = {}
    z = NormalDist().inv_cdf(1 - 0.05 / (2 * len(RATE_METRICS)))  # simultaneous 95% over the rates (Bonferroni)
    for metric, (flag, better) in RATE_METRICS.items():
        x1, n1, x2, n2 = new["counts"][flag], new["known"][flag], old["counts"][flag], old["known"][flag]
        if min(n1, n2) < max(1, min_answers):
            continue  # not readable on enough answers on both sides (a context logged before the column existed)
        low, high = newcombe_independent(x1, n1, x2, n2, z=z)
        worse = high < -tolerance if better > 0 else low > tolerance
        metrics[metric] = {
            "new": x1 / n1,
            "old": x2 / n2,
            "diff": x1 / n1 - x2 / n2,
            "low": low,
            "high": high,
            "higher_is_better": better > 0,
            "regression": worse,
        }
    regressions = [m for m, row in metrics.items() if row["regression"]]
    return {**result, "verdict": REGRESSION if regressions else NO_REGRESSION, "regressions": regressions, "metrics": metrics}


def champion_periods(history: list[dict], until: datetime, days: int = PERIOD_DAYS) -> dict | None:
    """Which champion served at `until`, since when, which served before it, and the two periods to compare:
    the new one's answers since its promotion and the previous one's in the `days` before it (each at most
    `days` long). None when the base model serves or no champion move is logged."""
    champion = champion_at(history, until)
    if champion is None:
        return None
    move = [m for m in history if m["alias"] == CHAMPION and m["to"] == champion and datetime.fromisoformat(m["at"]) <= until][-1]
    promoted = datetime.fromisoformat(move["at"])
    return {
        "champion": move["to"],
        "previous": move["from"] or BASE,
        "promoted_at": move["at"],
        "new_period": (max(promoted, until - timedelta(days=days)), until),
        "old_period": (promoted - timedelta(days=days), promoted),
    }
