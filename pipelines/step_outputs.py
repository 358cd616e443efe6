"""Prune the step outputs that multi-process and Kubernetes runs leave in the data home.

With RAGTUNE_EXECUTOR=multiprocess or k8s, steps hand values over through files under
$RAGTUNE_HOME/step_outputs/<run id>/ (assets/launchers.py). A finished run's files
are still what a re-execution from the UI reads (re-run from failure, or one step of a
finished run), so they are kept for a while and then removed; a folder whose run is
still going, or is gone from the run history, is judged accordingly.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

DAY = 86400.0


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)  # run ids
    kept: int = 0
    bytes_freed: int = 0


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prune_step_outputs(base: Path, instance, keep_days: float, now: float | None = None) -> PruneReport:
    """Remove the folders of runs that ended more than `keep_days` ago.

    A run still queued, starting or going is never touched, nor is any run up the chain of parents
    of such a run (a re-execution loads the steps it skips from whichever ancestor produced them). A folder whose run id the instance does not
    know (deleted from the run history) goes once the folder itself is older than `keep_days`.
    """
    from dagster import DagsterRunStatus, RunsFilter

    now = time.time() if now is None else now
    report = PruneReport()
    if not base.is_dir():
        return report
    active = instance.get_runs(
        filters=RunsFilter(
            statuses=[
                DagsterRunStatus.QUEUED,
                DagsterRunStatus.NOT_STARTED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.STARTED,
                DagsterRunStatus.CANCELING,
            ]
        )
    )
    needed = set()
    for run in active:  # a re-execution reads steps it skips from any run up its chain of parents
        while run is not None and run.run_id not in needed:
            needed.add(run.run_id)
            run = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        run_id = folder.name
        if run_id in needed:
            report.kept += 1
            continue
        record = next(iter(instance.get_run_records(filters=RunsFilter(run_ids=[run_id]), limit=1)), None)
        if record is None:
            ended = folder.stat().st_mtime
        elif record.dagster_run.is_finished:
            ended = record.end_time or record.update_timestamp.timestamp()
        else:
            report.kept += 1
            continue
        if now - ended < keep_days * DAY:
            report.kept += 1
            continue
        report.bytes_freed += folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        report.removed.append(run_id)
    return report
