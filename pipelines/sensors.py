"""Sensors: start work when data, not the calendar, says so."""

from __future__ import annotations

import dagster as dg

from pipelines.jobs import adapter_retrain_job
from ragtune.settings import Settings

CURATED_VOLUME_SENSOR = "curated_volume_sensor"
STEP_OUTPUTS_PRUNER = "step_outputs_pruner"


def curated_volume_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name=CURATED_VOLUME_SENSOR,
        job=adapter_retrain_job,
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Launch adapter_retrain once RAGTUNE_RETRAIN_MIN_INTERACTIONS new accepted interactions arrived "
        "since the last trained version (off by default; run keys stop duplicates).",
    )
    def sensor(context: dg.SensorEvaluationContext):
        from ragtune.behaviour.interactions import InteractionLog
        from ragtune.behaviour.retrain_trigger import check_volume
        from ragtune.registry import RegistryUnavailable

        log = InteractionLog(settings.interactions_db)
        try:
            trigger = check_volume(settings, log.records(), log.forgotten())
        except RegistryUnavailable as exc:  # "nothing trained yet" would count every interaction as new
            return dg.SkipReason(f"registry unavailable, tick skipped: {exc}")
        if not trigger.due:
            return dg.SkipReason(trigger.reason())
        return dg.RunRequest(
            run_key=trigger.run_key, tags={"ragtune/trigger": "curated_volume", "ragtune/new_interactions": str(trigger.new)}
        )

    return sensor


def step_outputs_pruner(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name=STEP_OUTPUTS_PRUNER,
        minimum_interval_seconds=6 * 3600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Remove $RAGTUNE_HOME/step_outputs/<run id> folders (left by RAGTUNE_EXECUTOR=multiprocess or k8s) "
        "of runs that ended more than RAGTUNE_KEEP_STEP_OUTPUTS_DAYS ago; launches nothing.",
    )
    def sensor(context: dg.SensorEvaluationContext):
        from pipelines.step_outputs import prune_step_outputs

        report = prune_step_outputs(settings.step_outputs_dir, context.instance, settings.keep_step_outputs_days)
        return dg.SkipReason(f"removed {len(report.removed)} run folders ({report.bytes_freed / 1e6:.1f} MB), kept {report.kept}")

    return sensor
