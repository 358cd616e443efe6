"""Evaluate registered adapters on an evaluation set: the harness wired to the data home.

Used by the `adapter_evaluation` asset and by `ragtune eval`. Candidates come
from the registry: the base model, the `champion` alias, the challenger (a
version number or alias), and the challenger without retrieval.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from evaluation.gate import GatePolicy, Verdict, compare, decide
from evaluation.harness import (
    CACHE_VERSION,
    Candidate,
    EvalReport,
    HarnessConfig,
    build_probes,
    eval_set_digest,
    item_metrics,
    run_harness,
)
from evaluation.intervals import mean_interval
from ragtune import registry
from ragtune.precision import resolve_dtype
from ragtune.settings import Settings

LABELS = {
    "base_rag": "base + RAG",
    "champion_rag": "champion + RAG",
    "challenger_rag": "challenger + RAG",
    "challenger_no_rag": "challenger, no retrieval",
}


@dataclass
class Evaluation:
    report: EvalReport
    challenger: str | None  # version
    champion: str | None  # version at evaluation time
    incumbent: str  # candidate the challenger is judged against: champion_rag, or base_rag when there is none
    index_version: int
    eval_digest: str
    embedder_version: str = "base"  # of the embedder that built the live index (knowledge/live_index.py)
    decoding: dict = field(default_factory=dict)  # dtype, constrained, batch size, token budget: how every candidate answered
    comparison: dict | None = field(init=False)  # challenger_rag vs the incumbent, paired (evaluation/gate.py:compare)
    intervals: dict = field(init=False)  # candidate -> metric -> its mean alone, with a 95% interval

    def __post_init__(self):
        paired = "challenger_rag" in self.report.metrics and self.incumbent in self.report.metrics
        self.comparison = compare(self.report.rows, "challenger_rag", self.incumbent) if paired else None
        self.intervals = candidate_intervals(self.report.rows)

    def as_dict(self) -> dict:
        return {
            **self.report.as_dict(),
            "challenger": self.challenger,
            "champion": self.champion,
            "incumbent": self.incumbent,
            "index_version": self.index_version,
            "eval_digest": self.eval_digest,
            "embedder_version": self.embedder_version,
            "decoding": self.decoding,
            "comparison": self.comparison,
            "intervals": self.intervals,
            # metric definitions change (issue 13 made citations and the primary stricter): figures recorded
            # under another scoring version are not comparable with these
            "scoring_version": CACHE_VERSION,
        }


def candidate_intervals(
    rows: list[dict],
    names=(
        "identifier_match",
        "identifier_match_gold_in_context",
        "citation_accuracy_gold_in_context",
        "format_validity",
        "abstention",
        "adherence",
    ),
) -> dict:
    """Each candidate's headline metrics on their own, with 95% intervals (Wilson for 0/1 values); for reporting,
    the gate reads the paired comparison."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        scored = item_metrics(row)
        for name in names:
            if name in scored:
                values.setdefault(row["candidate"], {}).setdefault(name, []).append(scored[name])
    return {candidate: {name: mean_interval(v).as_dict() for name, v in metrics.items()} for candidate, metrics in values.items()}


def tqdm_progress(total_hint: str = "answers"):
    """A progress callback for run_harness: one bar per candidate, on stderr."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = tqdm(total=total, desc=f"eval {LABELS.get(name, name)}", unit=total_hint, file=sys.stderr, leave=False)
        bars[name].update(done - bars[name].n)
        if done == total:
            bars[name].close()

    return update


def candidates(
    settings: Settings,
    challenger: str | None,
    champion: str | None,
    include_base: bool = True,
    no_retrieval: bool = True,
    floors: dict[str, float | None] | None = None,
) -> list[Candidate]:
    """The candidates to score; `floors` maps a version to the relevance floor it is served with."""

    def adapter(version: str) -> str:
        return str(registry.download_adapter(settings.tracking_uri, settings.registered_model, version, settings.adapters_dir))

    floor = (floors or {}).get
    chosen = [Candidate("base_rag", None)] if include_base or not champion else []
    if champion and champion != challenger:
        chosen.append(Candidate("champion_rag", adapter(champion), version=champion, floor=floor(champion)))
    if challenger:
        chosen.append(Candidate("challenger_rag", adapter(challenger), version=challenger, floor=floor(challenger)))
        if no_retrieval:
            chosen.append(Candidate("challenger_no_rag", adapter(challenger), retrieval=False, version=challenger))
    return chosen


def evaluate(
    settings: Settings,
    items: list[dict],
    config: HarnessConfig,
    challenger: str | None = None,
    include_base: bool = True,
    progress=None,
    skipped: list[str] | None = None,
) -> Evaluation:
    """Score base, champion and challenger (if any) on the same probes against the live index.

    Each adapter is scored as it is (or would be) served: with the relevance floor measured when it was
    trained and tagged on its version, when floors are on and it was measured with the live embedder; the
    base model has none. So the gate sees what a release changes, weights and floor together, and
    `abstention_by_model` and `below_floor` tell the two apart.
    """
    from evaluation.retrieval import ranked_documents
    from ragtune.knowledge.live_index import open_live
    from ragtune.knowledge.relevance import below, relevance, served_floor, transfers
    from ragtune.knowledge.retriever import Retriever
    from ragtune.llm.base_model import resolve_base_model
    from ragtune.llm.generator import Generator

    if not items:
        raise ValueError("no evaluation item to score")
    live, store, embedder = open_live(settings)
    if not store.exists():
        raise RuntimeError(f"no index at {settings.lancedb_uri}: run `ragtune refresh` first")
    retriever = Retriever(store, embedder, settings.rrf_k)
    index_version = store.version()

    def search(question: str, n: int) -> list[dict]:
        return [hit.as_dict() for hit in retriever.search(question, k=n)]

    probes, retrieval = build_probes(items, search, config, lambda q, chunks: relevance(embedder, q, chunks))
    champion = registry.resolve(settings.tracking_uri, settings.registered_model, registry.CHAMPION)
    floors = {
        version: served_floor(
            registry.version_tags(settings.tracking_uri, settings.registered_model, version),
            settings.relevance_floor_quantile > 0,
            embedder.fingerprint,
        )
        for version in {challenger, champion} - {None}
    }
    # The challenger's floor is checked before it is ever served: one that declines in-scope held-out questions
    # beyond relevance.DECLINE_TOLERANCE is not applied (and record_evaluation tags it so, for serving). The champion is scored
    # with the floor it is served with, whatever this set says of it.
    dropped = {}
    floor = floors.get(challenger)
    gold_served = [p.relevance for p in probes if p.kind == "answer" and set(ranked_documents(p.documents)) & set(p.gold_doc_ids)]
    declines = [float(below(floor.value, v)) for v in gold_served if v is not None] if floor else []
    if floor and declines and challenger != champion and not transfers(floor, mean_interval(declines).low):
        dropped[challenger] = (
            f"declines {int(sum(declines))} of {len(declines)} held-out questions with a gold document served "
            f"(measured to decline {floor.quantile:.0%} of the training questions): not applied"
        )
        floors[challenger] = None
    chosen = candidates(settings, challenger, champion, include_base, floors={v: f and f.value for v, f in floors.items()})
    base_model = str(resolve_base_model(settings.base_model, settings.models_dir))

    def generator_for(candidate: Candidate) -> Generator:
        return Generator(
            base_model,
            candidate.adapter_dir,
            max_new_tokens=config.max_new_tokens,
            dtype=config.dtype,
            batch_size=config.batch_size,
            constrained=config.constrained,
        )

    report = run_harness(
        probes,
        retrieval,
        chosen,
        generator_for,
        base_model,
        config,
        cache_dir=settings.evaluations_dir,
        progress=progress,
        skipped=skipped,
    )
    incumbent = "champion_rag" if "champion_rag" in report.metrics else "base_rag"
    decoding = {
        "dtype": resolve_dtype(config.dtype),
        "constrained": config.constrained,
        "batch_size": config.batch_size,
        "max_new_tokens": config.max_new_tokens,
        # the floor each candidate was scored with (None: it declines nothing)
        "relevance_floor": {c.name: c.floor for c in chosen if c.retrieval},
        "relevance_floors_measured": {v: f.as_dict() if f else None for v, f in floors.items()},
        "relevance_floors_dropped": dropped,
    }
    return Evaluation(
        report=report,
        challenger=challenger,
        champion=champion,
        incumbent=incumbent,
        index_version=index_version,
        eval_digest=eval_set_digest(items),
        embedder_version=live.embedder_version,
        decoding=decoding,
    )


def verdict_of(evaluation: dict, policy: GatePolicy) -> Verdict:
    """The gate on an evaluation's recorded comparison (Evaluation.as_dict(), or the summary artifact). A summary
    recorded before comparisons were kept has none: every rule is unmeasured, not enough evidence."""
    return decide(evaluation.get("comparison") or {}, policy)


def table_rows(
    metrics: dict[str, dict[str, float]],
    names=(
        "exact_match",
        "token_f1",
        "identifier_match",
        "identifier_match_gold_in_context",
        "format_validity",
        "format_validity_unconstrained",
        "citation_accuracy",
        "citation_accuracy_gold_in_context",
        "abstention",
        "adherence",
        "false_abstention_gold_in_context",
        "gold_in_context",
        "latency_p50_ms",
        "latency_p95_ms",
        "tokens_mean",
    ),
) -> list[dict]:
    """One row per candidate with the metrics every report shows (missing ones as None)."""
    return [{"candidate": LABELS.get(name, name), **{m: values.get(m) for m in names}} for name, values in metrics.items()]
