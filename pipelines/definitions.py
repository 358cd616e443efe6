"""The single Dagster entry point (workspace.yaml loads this module).

Built lazily by `@dg.definitions`, so settings are read when Dagster loads the
code location, not when the module is imported.
"""

from __future__ import annotations

import dagster as dg

from assets.knowledge import KNOWLEDGE_ASSETS, KNOWLEDGE_CHECKS
from pipelines.jobs import index_refresh_job, nightly_index_refresh
from pipelines.resources import EmbedderResource, LanceDBResource
from ragtune.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    return dg.Definitions(
        assets=KNOWLEDGE_ASSETS,
        asset_checks=KNOWLEDGE_CHECKS,
        jobs=[index_refresh_job],
        schedules=[nightly_index_refresh(settings.timezone)],
        resources={
            "io_manager": dg.mem_io_manager,
            "lancedb": LanceDBResource(home=str(settings.home_dir)),
            "embedder": EmbedderResource(model=settings.embedder or None),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
