"""Record an evaluation on the challenger, judge it, and release it.

Each step reads what it needs from the registry, so `release` can be re-run on
its own after a crash and converges: the evaluation summary lives as an
artifact on the challenger's MLflow run, the verdict is decided again from it,
and the aliases move in the order `registry.promote` guarantees.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from evaluation.gate import GatePolicy, Verdict
from evaluation.runner import Evaluation, verdict_of
from ragtune import registry
from ragtune.jsonl import write_jsonl
from ragtune.knowledge.relevance import DROPPED_TAG

SUMMARY = "evaluation/summary.json"
ITEMS = "evaluation/items.jsonl"
TAGGED = (
    "identifier_match",
    "identifier_match_gold_in_context",
    "format_validity",
    "citation_accuracy",
    "abstention",
    "adherence",
)


class ReleaseError(RuntimeError):
    pass


def record_evaluation(tracking_uri: str, name: str, run_id: str, evaluation: Evaluation) -> dict:
    """Metrics on the challenger's run (`eval/<candidate>/<metric>`), summary and per-item rows as artifacts,
    headline metrics as version tags. Returns the summary."""
    from mlflow.entities import Metric

    c = registry.client(tracking_uri)
    summary = evaluation.as_dict()
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"eval/{candidate}/{metric}", float(value), now, 0)
        for candidate, values in evaluation.report.metrics.items()
        for metric, value in values.items()
        if not math.isnan(value)
    ]
    metrics += [
        Metric(f"eval/retrieval/{k.replace('@', '_at_')}", float(v), now, 0) for k, v in evaluation.report.retrieval.items()
    ]
    c.log_batch(run_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "evaluation"
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        write_jsonl(folder / "items.jsonl", evaluation.report.rows)
        c.log_artifacts(run_id, str(folder), "evaluation")
    mine = evaluation.report.metrics.get("challenger_rag", {})
    registry.tag_version(
        tracking_uri,
        name,
        evaluation.challenger,
        {
            **{f"eval_{m}": mine[m] for m in TAGGED if m in mine},
            "evaluated_index_version": evaluation.index_version,
            "evaluated_against": evaluation.champion or "base",
            "eval_set_digest": evaluation.eval_digest,
            "eval_dtype": evaluation.decoding.get("dtype", ""),
            "eval_constrained": str(evaluation.decoding.get("constrained", "")),
            # a floor that did not hold on the held-out questions is never served (ragtune.knowledge.relevance)
            **(
                {DROPPED_TAG: evaluation.decoding["relevance_floors_dropped"][evaluation.challenger]}
                if evaluation.challenger in evaluation.decoding.get("relevance_floors_dropped", {})
                else {}
            ),
        },
    )
    return summary


def load_summary(tracking_uri: str, name: str, version: str) -> dict:
    """The evaluation summary recorded on the version's run; ReleaseError when it was never evaluated."""
    import mlflow

    row = next((r for r in registry.list_versions(tracking_uri, name) if r["version"] == str(version)), None)
    if row is None:
        raise ReleaseError(f"{name} has no version {version}")
    c = registry.client(tracking_uri)
    listed = registry.asking(
        tracking_uri,
        f"list the artifacts of run {row['run_id']}",
        lambda: c.list_artifacts(row["run_id"], SUMMARY.rsplit("/", 1)[0]),
    )
    if SUMMARY not in {a.path for a in listed}:
        raise ReleaseError(f"version {version} has no recorded evaluation ({SUMMARY} on run {row['run_id']})")
    with tempfile.TemporaryDirectory() as tmp:  # there but unreadable: RegistryUnavailable, not "never evaluated"
        path = registry.asking(
            tracking_uri,
            f"download {SUMMARY}",
            lambda: mlflow.artifacts.download_artifacts(run_id=row["run_id"], artifact_path=SUMMARY, dst_path=tmp),
        )
        return json.loads(Path(path).read_text())


def judge(tracking_uri: str, name: str, summary: dict, policy: GatePolicy, run_id: str | None) -> Verdict:
    """The gate on a recorded evaluation (its paired comparison); the verdict is written on the version either way."""
    verdict = verdict_of(summary, policy)
    version = summary["challenger"]
    tags = {"gate_outcome": verdict.outcome, "gate_reasons": "; ".join(verdict.reasons)[:4000]}
    if verdict.passed:
        registry.tag_version(tracking_uri, name, version, {"gate_verdict": "passed", **tags})
    else:
        registry.reject(tracking_uri, name, version, verdict.reasons, run_id)
        registry.tag_version(tracking_uri, name, version, tags)
    return verdict


def release_challenger(tracking_uri: str, name: str, policy: GatePolicy, run_id: str | None = None) -> dict:
    """Promote the `challenger` alias if its recorded evaluation passes the gate again, here and now."""
    current = registry.aliases(tracking_uri, name)
    version = current.get(registry.CHALLENGER)
    if not version:
        raise ReleaseError("no challenger alias: nothing to release (run adapter_evaluation first)")
    summary = load_summary(tracking_uri, name, version)
    if current.get(registry.CHAMPION) == version:  # a crash after the champion moved: finish the move
        registry.clear_challenger(tracking_uri, name, version, "released (resumed after a crash)", run_id)
        return {
            "released": True,
            "version": version,
            "champion": version,
            "previous_champion": current.get(registry.PREVIOUS_CHAMPION),
            "resumed": True,
        }
    if summary["champion"] != current.get(registry.CHAMPION):
        raise ReleaseError(
            f"the champion moved since version {version} was evaluated (against "
            f"{summary['champion'] or 'the base model'}, champion now {current.get(registry.CHAMPION)}); "
            "evaluate it again"
        )
    verdict = judge(tracking_uri, name, summary, policy, run_id)
    if not verdict.passed:
        return {
            "released": False,
            "version": version,
            "champion": current.get(registry.CHAMPION),
            "outcome": verdict.outcome,
            "reasons": verdict.reasons,
        }
    low, high = verdict.interval
    moved = registry.promote(
        tracking_uri,
        name,
        version,
        run_id=run_id,
        reason=f"release gate passed ({verdict.primary_metric} "
        f"{verdict.challenger:.3f} vs {verdict.incumbent:.3f}, difference 95% [{low:+.3f}, {high:+.3f}])",
    )
    return {
        "released": True,
        "version": version,
        "champion": moved["champion"],
        "previous_champion": moved["previous_champion"],
        "outcome": verdict.outcome,
        "reasons": verdict.reasons,
    }
