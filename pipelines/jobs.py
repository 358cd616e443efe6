"""Jobs select assets by group; schedules say when they run."""

from __future__ import annotations

import dagster as dg

INDEX_REFRESH = "index_refresh"
NIGHTLY_INDEX_REFRESH = "nightly_index_refresh"
NIGHTLY_CRON = "0 2 * * *"

index_refresh_job = dg.define_asset_job(
    name=INDEX_REFRESH,
    selection=dg.AssetSelection.groups("knowledge"),
    description="Load the source folder, chunk, embed only what changed into LanceDB, check the result.",
    tags={"ragtune/stage": "knowledge"},
    # One process per run: the embedder loads once, and documents and chunks pass between
    # steps in memory, so two runs at once never read each other's intermediate values.
    executor_def=dg.in_process_executor,
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
