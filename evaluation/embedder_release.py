"""Judge a registered embedder version on held-out questions and, when it wins, swap it in blue/green.

    outcome = judge_and_release(settings, "3", "/data/embedders/v3", items, EmbedderGatePolicy(), run_id)

1. build the green table: the live table's chunks embedded by the challenger (knowledge/blue_green.py);
2. search every held-out item with the live retriever and with the challenger over green (hybrid, as served);
3. decide with the embedder gate (evaluation/embedder_gate.py) and record the evidence on the MLflow run;
4. passed: catch green up, check it, switch the live pointer, move the registry aliases (champion,
   previous_champion); otherwise drop green and tag the version rejected. The live index is only read
   until the switch, so a failure anywhere before it leaves users on the old table.
"""

from __future__ import annotations

from evaluation.embedder_gate import EmbedderGatePolicy, compare_retrieval, decide_retrieval, retrieval_rows
from ragtune import registry
from ragtune.knowledge.blue_green import build_green, discard_green, promote_green, switch_back
from ragtune.knowledge.embedder import load_embedder
from ragtune.knowledge.live_index import BASE, open_live, read_previous
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import Settings


def searcher(retriever: Retriever):
    return lambda question, n: retriever.search(question, k=n)


def judge_and_release(
    settings: Settings,
    version: str,
    path: str,
    items: list[dict],
    policy: EmbedderGatePolicy,
    run_id: str | None = None,
    log=print,
) -> dict:
    """Build, evaluate, gate and (on pass) switch to embedder `version` stored at `path`; what happened."""
    uri, name = settings.tracking_uri, settings.registered_embedder
    live, store, embedder = open_live(settings)
    incumbent = Retriever(store, embedder, settings.rrf_k)
    challenger = load_embedder(path, settings.embed_batch_size, settings.dtype)
    registry.set_challenger(uri, name, version, run_id)
    built = build_green(settings, challenger, version, lambda done, total: log(f"green table: embedded {done}/{total} chunks"))
    log(f"green table {built['table']}: {built['chunks']} chunks in {built['seconds']} s")
    green = Retriever(ChunkStore(settings.lancedb_uri, built["table"], challenger.dim), challenger, settings.rrf_k)
    rows = {
        "live": retrieval_rows(searcher(incumbent), items, policy.k),
        "challenger": retrieval_rows(searcher(green), items, policy.k),
    }
    comparison = compare_retrieval(rows["challenger"], rows["live"], policy.k)
    verdict = decide_retrieval(comparison, policy)
    record(uri, run_id, comparison, verdict)
    registry.tag_version(uri, name, version, {"gate_verdict": verdict.outcome, "green_table": built["table"]})
    outcome = {
        "version": version,
        "incumbent_embedder": live.embedder_version,
        "incumbent_table": live.table,
        "green": built,
        "comparison": comparison,
        "verdict": verdict.as_dict(),
        "switched": False,
    }
    if not verdict.passed:
        registry.reject(uri, name, version, verdict.reasons, run_id)
        discard_green(settings, built["table"])
        return outcome
    # The registry moves first: it refuses (a version flagged needs_retrain meanwhile, MLflow down) before
    # users see anything; if the switch then fails its checks, the registry move is undone.
    before = registry.aliases(uri, name).get(registry.CHAMPION)
    registry.promote(uri, name, version, f"gate passed: {verdict.reasons[-1]}", run_id)
    try:
        switched = promote_green(settings, built["table"], challenger, version, reason=verdict.reasons[0])
    except Exception:
        undo_promotion(uri, name, before, "the blue/green switch failed", run_id)
        raise
    return {**outcome, "switched": True, "live_table": switched["live"]["table"]}


def undo_promotion(uri: str, name: str, before: str | None, reason: str, run_id: str | None) -> None:
    if before:
        registry.rollback(uri, name, reason, to=before, force=True, run_id=run_id)
    else:
        registry.retire_champion(uri, name, reason, run_id)


def record(tracking_uri: str, run_id: str | None, comparison: dict, verdict) -> None:
    """The evidence on the embedder's MLflow run: both means, the gain and its interval per metric."""
    if not run_id:
        return
    c = registry.client(tracking_uri)
    for metric, m in comparison["metrics"].items():
        key = metric.replace("@", "_at_")
        for field in ("challenger", "incumbent", "diff", "low", "high"):
            c.log_metric(run_id, f"eval/{key}/{field}", float(m[field]))
    c.set_tag(run_id, "gate_verdict", verdict.outcome)
    c.set_tag(run_id, "gate_reasons", "\n".join(verdict.reasons)[:4000])


def roll_back_embedder(settings: Settings, reason: str, force: bool = False) -> dict:
    """Back to the table and embedder live before the last swap. The old table was kept, so only chunks that
    changed since are embedded (none when nothing did). The registry follows, and moves first: the earlier
    version is champion again (refused, unless `force`, when it was trained on erased data), or none is when
    the earlier table was built by the configured (base) embedder."""
    uri, name = settings.tracking_uri, settings.registered_embedder
    restored = read_previous(settings).embedder_version
    if restored == BASE:
        left = registry.retire_champion(uri, name, reason)
    else:
        left = registry.rollback(uri, name, reason, to=restored, force=force)["rolled_back_from"]
    switched = switch_back(settings, reason)
    return {
        "live_table": switched["live"]["table"],
        "embedder_version": restored,
        "rolled_back_from": left or switched["previous"]["embedder_version"],
        "re_embedded": switched["caught_up"]["embedded"],
        "reason": reason,
    }
