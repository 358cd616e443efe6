"""Group `release`: evaluate the new adapter against the champion, gate it, release it.

adapter_evaluation (challenger alias set, harness run, recorded in MLflow)
  -> release_gate (blocking check: decides and tags the verdict)
  -> release (decides again from the registry, then moves the aliases).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from assets.resources import InteractionLogResource, MLflowResource
from evaluation.gate import DEFAULT_GATE, GatePolicy
from evaluation.harness import HarnessConfig
from evaluation.live_traffic import live_traffic, live_traffic_markdown
from evaluation.release import judge, record_evaluation, release_challenger
from evaluation.runner import LABELS, evaluate, table_rows, tqdm_progress
from ragtune import registry

GROUP = "release"
DEFAULT_HARNESS = HarnessConfig()
DEFAULT_PROBED = 60  # probes per kind: the gate wants at least 50 judged abstentions and counterfactuals
LIVE_TRAFFIC_DAYS = 28  # the challenger's shadow answers read back this far


class EvaluationConfig(dg.Config):
    limit: int | None = Field(None, description="Items answered per candidate (None: the whole evaluation set).")
    probe_limit: int | None = Field(DEFAULT_PROBED, description="Of those, items also probed for abstention and adherence.")
    k: int | None = Field(None, description="Documents in the context (default RAGTUNE_SERVE_K: as served).")
    max_new_tokens: int = Field(DEFAULT_HARNESS.max_new_tokens, description="Generation budget per answer.")


class GateConfig(dg.Config):
    policy: str = Field(str(DEFAULT_GATE), description="Gate policy YAML (evaluation/gate.py:GatePolicy).")


def metrics_table(metrics: dict) -> dg.MetadataValue:
    rows = table_rows(metrics)
    columns = [dg.TableColumn(name, "string" if name == "candidate" else "float") for name in rows[0]]
    return dg.MetadataValue.table(records=[dg.TableRecord(data=row) for row in rows], schema=dg.TableSchema(columns=columns))


def comparison_table(comparison: dict) -> dg.MetadataValue:
    """The paired comparison the gate decides on: one row per metric, the difference with its 95% interval."""
    fields = ("incumbent", "challenger", "diff", "low", "high")
    columns = [dg.TableColumn("metric", "string"), *(dg.TableColumn(f, "float") for f in fields), dg.TableColumn("n", "int")]
    records = [
        dg.TableRecord(data={"metric": metric, **{f: m[f] for f in (*fields, "n")}})
        for metric, m in comparison["metrics"].items()
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


@dg.asset(
    group_name=GROUP,
    description="The new adapter (alias `challenger`) against the champion or the base model, "
    "with and without retrieval; metrics to MLflow and a per-item artifact.",
)
def adapter_evaluation(
    context: dg.AssetExecutionContext,
    lora_adapter: dict,
    evaluation_set: dict,
    config: EvaluationConfig,
    mlflow: MLflowResource,
    interaction_log: InteractionLogResource,
) -> dg.Output[dict]:
    s = mlflow.settings()
    version = lora_adapter["model_version"]
    if not version:
        raise RuntimeError("lora_adapter registered no model version; nothing to evaluate")
    registry.set_challenger(mlflow.uri(), mlflow.model_name(), version, context.run_id)
    harness = HarnessConfig.for_settings(
        s, k=config.k, limit=config.limit, probe_limit=config.probe_limit, max_new_tokens=config.max_new_tokens
    )
    evaluation = evaluate(
        s, evaluation_set["items"], harness, challenger=version, progress=tqdm_progress(), skipped=evaluation_set["skipped"]
    )
    summary = record_evaluation(mlflow.uri(), mlflow.model_name(), lora_adapter["run_id"], evaluation)
    mine = evaluation.report.metrics["challenger_rag"]
    since = (datetime.now(UTC) - timedelta(days=LIVE_TRAFFIC_DAYS)).isoformat()
    traffic = live_traffic(interaction_log.get().records(since=since), version)
    return dg.Output(
        summary,
        metadata={
            "model_version": version,
            "champion": evaluation.champion or "none (base model)",
            "judged_against": LABELS[evaluation.incumbent],
            "items": evaluation.report.items,
            "index_version": evaluation.index_version,
            "metrics": metrics_table(evaluation.report.metrics),
            **({"comparison": comparison_table(evaluation.comparison)} if evaluation.comparison else {}),
            **{f"retrieval_{k.replace('@', '_at_')}": float(v) for k, v in evaluation.report.retrieval.items()},
            **{f"challenger_{m}": float(v) for m, v in mine.items()},
            "skipped_eval_lines": dg.MetadataValue.json(evaluation.report.skipped),
            "live_traffic_pairs": traffic["pairs"],
            "live_traffic": dg.MetadataValue.md(live_traffic_markdown(traffic)),
        },
    )


@dg.asset_check(
    asset=adapter_evaluation,
    blocking=True,
    description="The release gate (evaluation/gate.yaml): "
    "shown better than the incumbent on the primary metric (95% interval, paired), shown worse on no guard, "
    "on enough items to tell.",
)
def release_gate(
    context: dg.AssetCheckExecutionContext, adapter_evaluation: dict, config: GateConfig, mlflow: MLflowResource
) -> dg.AssetCheckResult:
    verdict = judge(
        mlflow.uri(), mlflow.model_name(), adapter_evaluation, GatePolicy.from_yaml(config.policy), context.run.run_id
    )
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description="\n".join(verdict.reasons),
        metadata={
            "model_version": adapter_evaluation["challenger"],
            "verdict": "passed" if verdict.passed else "rejected",
            "outcome": verdict.outcome,
            "reasons": dg.MetadataValue.json(verdict.reasons),
            "primary_metric": verdict.primary_metric,
            "challenger": verdict.challenger,
            "incumbent": verdict.incumbent,
            "interval": dg.MetadataValue.json(verdict.interval or []),
        },
    )


@dg.asset(
    group_name=GROUP,
    deps=[adapter_evaluation],
    description="Promote the challenger to champion if its "
    "recorded evaluation passes the gate again; the old champion becomes previous_champion.",
)
def release(context: dg.AssetExecutionContext, config: GateConfig, mlflow: MLflowResource) -> dg.Output[dict]:
    outcome = release_challenger(mlflow.uri(), mlflow.model_name(), GatePolicy.from_yaml(config.policy), context.run.run_id)
    if not outcome["released"]:
        raise dg.Failure(
            description=f"version {outcome['version']} did not pass the gate on re-check",
            metadata={"reasons": dg.MetadataValue.json(outcome["reasons"])},
        )
    return dg.Output(
        outcome,
        metadata={
            "champion": outcome["champion"],
            "previous_champion": outcome.get("previous_champion") or "none",
            "resumed": bool(outcome.get("resumed")),
        },
    )


RELEASE_ASSETS = [adapter_evaluation, release]
RELEASE_CHECKS = [release_gate]
