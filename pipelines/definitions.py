"""The single Dagster entry point (workspace.yaml loads this module).

Built lazily by `@dg.definitions`, so settings are read when Dagster loads the
code location, not when the module is imported.
"""

from __future__ import annotations

import dagster as dg

from assets.behaviour import BEHAVIOUR_ASSETS, BEHAVIOUR_CHECKS
from assets.interactions import INTERACTION_ASSETS, INTERACTION_CHECKS
from assets.knowledge import KNOWLEDGE_ASSETS, KNOWLEDGE_CHECKS
from assets.launchers import executor_for, io_manager_for, training_client
from assets.monitoring import MONITORING_ASSETS, MONITORING_CHECKS
from assets.release import RELEASE_ASSETS, RELEASE_CHECKS
from assets.resources import EmbedderResource, InteractionLogResource, LanceDBResource, MLflowResource
from pipelines.jobs import (
    adapter_retrain_job,
    daily_serving_report,
    index_refresh_job,
    interaction_curation_job,
    live_monitoring_job,
    nightly_index_refresh,
    quarterly_adapter_retrain,
)
from pipelines.rollback import champion_rollback_job
from pipelines.sensors import curated_volume_sensor, step_outputs_pruner
from ragtune.settings import Settings, load_settings


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    home = str(settings.home_dir)
    return dg.Definitions(
        assets=KNOWLEDGE_ASSETS + INTERACTION_ASSETS + BEHAVIOUR_ASSETS + RELEASE_ASSETS + MONITORING_ASSETS,
        asset_checks=KNOWLEDGE_CHECKS + INTERACTION_CHECKS + BEHAVIOUR_CHECKS + RELEASE_CHECKS + MONITORING_CHECKS,
        jobs=[index_refresh_job, interaction_curation_job, adapter_retrain_job, live_monitoring_job, champion_rollback_job],
        schedules=[
            nightly_index_refresh(settings.timezone),
            quarterly_adapter_retrain(settings.timezone),
            daily_serving_report(),
        ],
        sensors=[curated_volume_sensor(settings), step_outputs_pruner(settings)],
        executor=executor_for(settings),
        resources={
            "io_manager": io_manager_for(settings),
            "lancedb": LanceDBResource(home=home),
            "embedder": EmbedderResource(model=settings.embedder or None, home=home),
            "interaction_log": InteractionLogResource(home=home),
            "mlflow": MLflowResource(home=home),
            "training_pipes": training_client(settings),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
