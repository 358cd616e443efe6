"""Jobs select assets by group; schedules say when they run."""

from __future__ import annotations

import dagster as dg

from assets.monitoring import SERVING_DAYS

INDEX_REFRESH = "index_refresh"
INTERACTION_CURATION = "interaction_curation"
ADAPTER_RETRAIN = "adapter_retrain"
NIGHTLY_INDEX_REFRESH = "nightly_index_refresh"
NIGHTLY_CRON = "0 2 * * *"
QUARTERLY_ADAPTER_RETRAIN = "quarterly_adapter_retrain"
QUARTERLY_CRON = "0 3 1 1,4,7,10 *"
LIVE_MONITORING = "live_monitoring"
DAILY_SERVING_REPORT = "daily_serving_report"

# The executor comes from the Definitions (assets/launchers.py): by default one process per
# run, so models load once and values pass between steps in memory (two runs at once never read
# each other's intermediate values); with RAGTUNE_EXECUTOR=k8s each step is a Kubernetes job.
index_refresh_job = dg.define_asset_job(
    name=INDEX_REFRESH,
    selection=dg.AssetSelection.groups("knowledge"),
    description="Load the source folder, chunk, embed only what changed into LanceDB, check the result.",
    tags={"ragtune/stage": "knowledge"},
)

interaction_curation_job = dg.define_asset_job(
    name=INTERACTION_CURATION,
    selection=dg.AssetSelection.groups("interactions"),
    description="Read the interaction log and curate it: feedback rules, length, PII scrubbing, de-duplication.",
    tags={"ragtune/stage": "interactions"},
)

adapter_retrain_job = dg.define_asset_job(
    name=ADAPTER_RETRAIN,
    selection=dg.AssetSelection.groups("interactions", "behaviour", "release"),
    description="Curate interactions, build the RAFT dataset from the live index, train and register a LoRA adapter, "
    "evaluate it against the champion, gate it and release it.",
    tags={"ragtune/stage": "behaviour"},
)

live_monitoring_job = dg.define_asset_job(
    name=LIVE_MONITORING,
    selection=dg.AssetSelection.groups("monitoring"),
    partitions_def=SERVING_DAYS,
    description="Report one UTC day of live answers per model version and check the champion against the one before.",
    tags={"ragtune/stage": "monitoring"},
)


def nightly_index_refresh(timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=NIGHTLY_INDEX_REFRESH,
        job=index_refresh_job,
        cron_schedule=NIGHTLY_CRON,
        execution_timezone=timezone,
        description="Refresh the document index every night (RAGTUNE_SOURCE_DIR, RAGTUNE_TIMEZONE).",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def quarterly_adapter_retrain(timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=QUARTERLY_ADAPTER_RETRAIN,
        job=adapter_retrain_job,
        cron_schedule=QUARTERLY_CRON,
        execution_timezone=timezone,
        description="Retrain the adapter at 03:00 on the first day of each quarter; the gate decides whether it ships.",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )


def daily_serving_report() -> dg.ScheduleDefinition:
    """At 00:30 UTC, the report of the UTC day just ended (the partitions are UTC days, whatever RAGTUNE_TIMEZONE)."""
    return dg.build_schedule_from_partitioned_job(
        live_monitoring_job,
        name=DAILY_SERVING_REPORT,
        hour_of_day=0,
        minute_of_hour=30,
        description="Build yesterday's serving report (UTC day) and check the champion against the previous one.",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
