"""Two refreshes launched at once: the lancedb_writer pool (limit one) serialises their index writes."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from ragtune.orchestration import get_instance
from ragtune.settings import load_settings
from ragtune.store import ChunkStore

pytestmark = pytest.mark.integration


def step_window(instance, run_id, step_key="chunk_index"):
    records = instance.all_logs(run_id)
    start = next(r.timestamp for r in records if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_START and r.step_key == step_key)
    end = next(r.timestamp for r in records if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS and r.step_key == step_key)
    return start, end


def test_concurrent_refreshes_do_not_overlap_index_writes(home, corpus, embedder):
    env = {**os.environ, "RAGTUNE_HOME": str(home), "RAGTUNE_WRITE_BATCH": "8"}
    cmd = [sys.executable, "-m", "ragtune.cli", "refresh", "--source", str(corpus), "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-2000:]
    instance = get_instance(load_settings())
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="index_refresh"))
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    (a0, a1), (b0, b1) = sorted(step_window(instance, r.run_id) for r in runs)
    assert a1 <= b0, "the two chunk_index steps overlapped"
    ids = ChunkStore(load_settings().lancedb_uri).read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids))
