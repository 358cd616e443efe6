"""Two refreshes launched at once write the index one after the other.

On the embedded sqlite instance Dagster's pool alone is not enough (its slot
claims are not atomic on sqlite), so the index itself takes a write lock; the
second refresh must plan against what the first one wrote. The PostgreSQL
profile test checks the pool's step windows where the pool is exact.
"""

import os
import subprocess
import sys

import dagster as dg
import pytest

from assets.knowledge import INDEX_WRITER_POOL
from pipelines.runner import get_instance
from ragtune.knowledge.indexing import read_history
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings

pytestmark = pytest.mark.integration


def test_concurrent_refreshes_write_the_index_one_after_the_other(home, corpus, embedder):
    env = {**os.environ, "RAGTUNE_HOME": str(home), "RAGTUNE_WRITE_BATCH": "8"}
    cmd = [sys.executable, "-m", "ragtune.cli", "refresh", "--source", str(corpus), "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err[-2000:]
    settings = load_settings()
    instance = get_instance(settings)
    runs = instance.get_runs(filters=dg.RunsFilter(job_name="index_refresh"))
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert instance.event_log_storage.get_concurrency_info(INDEX_WRITER_POOL).slot_count == 1

    first, second = sorted(
        (e for e in read_history(settings.index_history) if e["action"] == "refresh"), key=lambda e: e["version_before"]
    )
    assert first["version_before"] == 0 and first["chunks_embedded"] > 0
    # The second writer started from the first one's result: nothing left to embed.
    assert second["version_before"] == first["version_after"]
    assert second["chunks_embedded"] == 0 and second["chunks_deleted"] == 0
    ids = ChunkStore(settings.lancedb_uri).read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)) == first["chunks_embedded"]
