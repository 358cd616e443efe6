"""Run ragtune's Dagster jobs on the persistent instance in the data home.

Runs launched here are recorded in the same instance `make ui` shows, so a
refresh started from the command line appears in the Dagster UI.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from assets.knowledge import INDEX_WRITER_POOL
from ragtune.settings import REPO_ROOT, Settings

INSTANCE_TEMPLATE = REPO_ROOT / "dagster.yaml"


@dataclass
class JobOutcome:
    success: bool
    run_id: str
    outputs: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # asset key -> its materialization metadata
    checks: dict = field(default_factory=dict)  # check name -> {passed, description, metadata}
    error: str | None = None


def prepare_dagster_home(settings: Settings) -> Path:
    """Create $RAGTUNE_HOME/dagster with the project's dagster.yaml and point DAGSTER_HOME at it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    template = Path(os.environ.get("RAGTUNE_DAGSTER_YAML") or INSTANCE_TEMPLATE)
    if not target.exists() or target.read_bytes() != template.read_bytes():
        shutil.copyfile(template, target)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["RAGTUNE_HOME"] = str(settings.home_dir)  # code servers launched by Dagster see the same home
    return home


def get_instance(settings: Settings):
    """The persistent instance; its sqlite schemas and pool slots are created once, under a file lock.

    Two commands started at the same moment on a fresh data home would otherwise
    both try to create the same tables, or both allocate the slot of the index
    writer pool (leaving it two slots wide).
    """
    from dagster import DagsterInstance

    from ragtune.locks import exclusive_lock

    home = prepare_dagster_home(settings)
    with exclusive_lock(home / ".instance.lock"):
        instance = DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        storage = instance.event_log_storage
        pools = storage.get_concurrency_keys()
        if storage.supports_global_concurrency_limits and INDEX_WRITER_POOL not in pools:
            storage.initialize_concurrency_limit_to_default(INDEX_WRITER_POOL)
    return instance


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_runs(instance, job_name: str) -> list[str]:
    """Mark runs of `job_name` whose process died (kill -9, power loss) as failed, freeing pool slots.

    Without this a killed run would hold the `lancedb_writer` slot for ever and
    every later refresh would wait on it.
    """
    from dagster import DagsterRunStatus, RunsFilter

    reaped = []
    runs = instance.get_runs(
        filters=RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
    )
    for run in runs:
        pid = int(run.tags.get("ragtune/pid", "0") or 0)
        if pid and pid != os.getpid() and not pid_alive(pid):
            instance.report_run_failed(run, message=f"ragtune: process {pid} is gone; run marked failed")
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(run.run_id)
    return reaped


def run_job(
    settings: Settings,
    job_name: str,
    run_config: dict | None = None,
    verbose: bool = False,
    output_nodes: tuple[str, ...] = (),
    assets: list[str] | None = None,
) -> JobOutcome:
    """Execute a job of the code location in this process, recorded on the persistent instance.

    `assets` runs only those assets of the job (for example `release` alone, to finish an interrupted release).
    """
    import dagster as dg

    from pipelines.definitions import build_definitions

    instance = get_instance(settings)
    reap_dead_runs(instance, job_name)
    job = build_definitions(settings).resolve_job_def(job_name)
    config = dict(run_config or {})
    # Quiet unless asked: a failure is reported by the command itself, with its root cause (`failure_message`).
    config.setdefault("loggers", {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}})
    result = job.execute_in_process(
        run_config=config,
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
        tags={"ragtune/launched_by": "cli", "ragtune/pid": str(os.getpid())},
    )
    outputs = {}
    for node in output_nodes:
        try:
            outputs[node] = result.output_for_node(node)
        except Exception:  # the step failed or never ran; the error below says why
            outputs[node] = None
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    checks = {
        e.check_name: {"passed": e.passed, "description": e.description, "metadata": {k: v.value for k, v in e.metadata.items()}}
        for e in result.get_asset_check_evaluations()
    }
    error = None if result.success else failure_message(result, job_name)
    return JobOutcome(
        success=result.success, run_id=result.run_id, outputs=outputs, metadata=metadata, checks=checks, error=error
    )


def root_cause(info) -> str:
    """The innermost error of a Dagster step failure: the one a person can act on."""
    while getattr(info, "cause", None) is not None:
        info = info.cause
    return f"{info.cls_name}: {info.message.strip()}" if info.cls_name else info.message.strip()


def failure_message(result, job_name: str) -> str:
    steps = [e for e in result.all_events if e.is_step_failure]
    events = steps or [e for e in result.all_events if e.is_failure]
    messages = []
    for event in events:
        info = getattr(event.event_specific_data, "error", None)
        messages.append(f"{event.step_key or job_name}: {root_cause(info) if info else event.message}")
    return "; ".join(dict.fromkeys(messages)) or f"{job_name} failed"
