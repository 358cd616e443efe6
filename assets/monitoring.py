"""Group `monitoring`: the daily serving report and its check on the newest champion.

`serving_report` is partitioned by UTC day (interaction timestamps are UTC); each partition reads that
day's logged interactions and reports every served (model version, index version) with the rates,
latency and retrieval figures of evaluation/live_report.py, plus the coverage gaps. The current
champion's figures are also attached as plain numbers, so the asset's Plots tab in the Dagster UI
draws them across days.

`champion_has_not_regressed` compares the champion serving at the end of the day (since its promotion)
with the one before it (in the weeks before the promotion) and warns, naming the metric, on a
significant regression. With RAGTUNE_MONITOR_AUTO_ROLLBACK it also rolls back through
`registry.rollback`, the function `ragtune models rollback` calls, so the move is in the alias log with
a reason like any other.
"""

from datetime import UTC, date, datetime

import dagster as dg

from assets.resources import EmbedderResource, InteractionLogResource, MLflowResource
from evaluation.live_report import (
    BASE,
    NOT_ENOUGH,
    RATE_METRICS,
    REGRESSION,
    champion_periods,
    compare_periods,
    live,
    live_report,
    summarise,
    version_of,
)
from ragtune import registry

GROUP = "monitoring"
SERVING_DAYS = dg.DailyPartitionsDefinition(start_date="2025-01-01")  # UTC days, as the log's timestamps
FIGURES = (*RATE_METRICS, "latency_p50_ms", "latency_p95_ms", "similarity_p10", "similarity_p50", "similarity_p90")


def iso(when: datetime) -> str:
    """The log's timestamp form (utc_iso), so the database compares the strings in time order."""
    return when.isoformat()


def champion_comparison(log, history: list[dict], until: datetime, tolerance: float, min_answers: int) -> dict:
    """The champion serving at `until` against the one before it, on the log's live answers of each period."""
    periods = champion_periods(history, until)
    if periods is None:
        return {"verdict": "no champion", "regressions": [], "metrics": {}}

    def period(version: str, span: tuple[datetime, datetime]) -> dict:
        records = log.records(since=iso(span[0]), until=iso(span[1]))
        return summarise([r for r in live(records) if version_of(r) == version])

    new = period(periods["champion"], periods["new_period"])
    old = period(periods["previous"], periods["old_period"])
    spans = {k: [iso(t) for t in periods[k]] for k in ("new_period", "old_period")}
    return {
        "champion": periods["champion"],
        "previous": periods["previous"],
        "promoted_at": periods["promoted_at"],
        **spans,
        **compare_periods(new, old, tolerance, min_answers),
    }


def fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def versions_markdown(report: dict) -> str:
    """One row per (model version, index version)."""
    head = ["model", "index", "answers", *FIGURES, "similarity histogram (0-1, 10 bins)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in report["versions"]:
        cells = [row["model_version"], row["index_version"], row["answers"], *(row[f] for f in FIGURES)]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + f" | {row['similarity_histogram']} |")
    return "\n".join(lines) if report["versions"] else "No live answers this day."


def gaps_markdown(gaps: dict | None) -> str:
    if not gaps or not gaps["clusters"]:
        return "No abstained, down-voted or poorly retrieved questions this day."
    lines = [f"{gaps['questions']} distinct questions ({gaps['clustered']} clustered), largest cluster first:", ""]
    for c in gaps["clusters"]:
        reasons = ", ".join(f"{k} {v}" for k, v in c["reasons"].items())
        lines.append(f"- **{c['size']} answers** ({c['questions']} questions; {reasons}): " + " / ".join(c["examples"]))
    return "\n".join(lines)


def comparison_text(comparison: dict) -> str:
    verdict = comparison["verdict"]
    if verdict == "no champion":
        return "The base model serves: no champion to compare."
    head = f"version {comparison['champion']} vs {comparison['previous']}"
    if verdict == NOT_ENOUGH:
        return f"{head}: not enough evidence ({comparison['new_answers']} and {comparison['old_answers']} answers)"
    if verdict != REGRESSION:
        return f"{head}: no significant regression ({comparison['new_answers']} vs {comparison['old_answers']} answers)"
    parts = [
        f"{m} {row['old']:.3f} -> {row['new']:.3f} (diff {row['diff']:+.3f}, 95% [{row['low']:+.3f}, {row['high']:+.3f}])"
        for m, row in comparison["metrics"].items()
        if row["regression"]
    ]
    return f"{head} regressed beyond ±{comparison['tolerance']}: " + "; ".join(parts)


def report_metadata(report: dict) -> dict:
    """Numbers for the current champion (plotted across partitions), and the tables as markdown."""
    champion = report["champion"]
    figures = report["by_model"].get(champion) or summarise([])
    metadata: dict = {"champion": champion, "answers": report["answers"], "champion_answers": figures["answers"]}
    metadata.update({f"champion_{f}": dg.MetadataValue.float(float(figures[f])) for f in FIGURES if figures[f] is not None})
    metadata["shadow_answers_excluded"] = report["shadow_answers"]
    metadata["versions"] = dg.MetadataValue.md(versions_markdown(report))
    metadata["coverage_gaps"] = dg.MetadataValue.md(gaps_markdown(report["gaps"]))
    metadata["comparison"] = dg.MetadataValue.md(comparison_text(report["comparison"]))
    return metadata


@dg.asset(
    group_name=GROUP,
    partitions_def=SERVING_DAYS,
    description="One UTC day of live answers per model and index version: votes, fallbacks, abstentions, valid "
    "citations, latency, retrieval similarity; clustered coverage gaps; the champion against the one before.",
)
def serving_report(
    context: dg.AssetExecutionContext,
    interaction_log: InteractionLogResource,
    mlflow: MLflowResource,
    embedder: EmbedderResource,
) -> dg.Output[dict]:
    s = interaction_log.settings()
    start, end = context.partition_time_window
    if end > datetime.now(UTC):  # Dagster launches it, but records no partition for a day not in the definition yet
        raise dg.Failure(f"the UTC day {context.partition_key} has not ended: its report can be built from {iso(end)}")
    log = interaction_log.get()
    records = log.records(since=iso(start), until=iso(end))
    report = live_report(records, s.review_low_similarity, embed=lambda texts: embedder.get().embed(texts))
    history = registry.alias_history(mlflow.uri(), mlflow.model_name())
    report["day"] = context.partition_key
    report["champion"] = registry.champion_at(history, end) or BASE
    report["comparison"] = champion_comparison(log, history, end, s.monitor_tolerance, s.monitor_min_answers)
    return dg.Output(report, metadata=report_metadata(report))


def rollback_reason(report: dict) -> str:
    return f"serving report {report['day']}: {comparison_text(report['comparison'])}"


@dg.asset_check(
    asset=serving_report,
    partitions_def=SERVING_DAYS,  # one result per day, on that day's report
    description="The champion's live rates against the previous champion's (Newcombe intervals); warns on a "
    "significant regression, and rolls back when RAGTUNE_MONITOR_AUTO_ROLLBACK is on.",
)
def champion_has_not_regressed(
    context: dg.AssetCheckExecutionContext, serving_report: dict, mlflow: MLflowResource
) -> dg.AssetCheckResult:
    comparison = serving_report["comparison"]
    metadata = {
        "verdict": comparison["verdict"],
        "regressions": dg.MetadataValue.json(comparison["regressions"]),
        "metrics": dg.MetadataValue.json(comparison["metrics"]),
    }
    if comparison["verdict"] != REGRESSION:
        return dg.AssetCheckResult(passed=True, description=comparison_text(comparison), metadata=metadata)
    description = comparison_text(comparison)
    if mlflow.settings().monitor_auto_rollback:
        outcome = auto_rollback(mlflow, serving_report, context.run.run_id)
        description += f"; {outcome}"
        metadata["rollback"] = outcome
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description=description, metadata=metadata)


ROLLBACK_DAYS = 2  # only the report of yesterday or today may roll back: a backfill of an old day never does


def auto_rollback(mlflow: MLflowResource, report: dict, run_id: str) -> str:
    """Roll the compared champion back to the version before it, if it still serves and that was a version.

    Never automatically: to a version that was itself rolled back (after v2 -> v1, v1 is never judged back
    into v2), nor from a backfilled report of an old day.
    """
    comparison = report["comparison"]
    uri, name = mlflow.uri(), mlflow.model_name()
    age = (datetime.now(UTC).date() - date.fromisoformat(report["day"])).days
    if age >= ROLLBACK_DAYS:
        return f"not rolled back: the report of {report['day']} is {age} days old (a backfill warns only)"
    serving = registry.aliases(uri, name).get(registry.CHAMPION)
    if serving != comparison["champion"]:
        return f"not rolled back: version {serving} serves now, not {comparison['champion']}"
    if comparison["previous"] == BASE:
        return "not rolled back: the base model served before; retire the champion by hand"
    tags = {v["version"]: v["tags"] for v in registry.list_versions(uri, name)}
    if "rolled_back_reason" in tags.get(str(comparison["previous"]), {}):
        return f"not rolled back: version {comparison['previous']} was rolled back before; decide by hand"
    try:
        moved = registry.rollback(uri, name, rollback_reason(report), to=comparison["previous"], run_id=run_id)
    except registry.RegistryError as exc:
        return f"not rolled back: {exc}"
    return f"rolled back to version {moved['champion']}"


MONITORING_ASSETS = [serving_report]
MONITORING_CHECKS = [champion_has_not_regressed]
