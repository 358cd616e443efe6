"""`champion_rollback`: undo a release from the Dagster UI's launchpad, as `ragtune models rollback` does from the CLI.

A rollback is an action on the registry, not data, so it is an op job rather than an asset.
The move is tagged on both versions with the reason and this run's id.
"""

import dagster as dg
from pydantic import Field

from assets.resources import MLflowResource
from ragtune import registry

CHAMPION_ROLLBACK = "champion_rollback"


class RollbackConfig(dg.Config):
    reason: str = Field(description="Why the release is undone; recorded on both versions.")
    to: str | None = Field(None, description="Version to restore; empty = the previous_champion alias.")
    force: bool = Field(False, description="Allow restoring a version flagged needs_retrain (trained on erased data).")


@dg.op(description="Move `champion` back to `previous_champion` (or the given version) in the MLflow registry.")
def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, mlflow: MLflowResource) -> dict:
    s = mlflow.settings()
    try:
        moved = registry.rollback(
            s.tracking_uri, s.registered_model, config.reason, config.to, config.force, run_id=context.run_id
        )
    except registry.RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.add_output_metadata(
        {"champion": moved["champion"], "rolled_back_from": str(moved["rolled_back_from"]), "reason": config.reason}
    )
    return moved


@dg.job(
    name=CHAMPION_ROLLBACK,
    tags={"ragtune/stage": "release"},
    executor_def=dg.in_process_executor,
    description="Undo a release: champion back to previous_champion (or a named version), with a reason.",
)
def champion_rollback_job():
    rollback_champion()
