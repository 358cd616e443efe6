"""SIGKILL the refresh while it writes the index: the index stays usable and the next run converges."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest

from pipelines.runner import get_instance
from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings

pytestmark = pytest.mark.integration


def start_refresh(source, home):
    env = {**os.environ, "RAGTUNE_HOME": str(home), "RAGTUNE_WRITE_BATCH": "4"}
    return subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", "refresh", "--source", str(source), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def written_past(store, version) -> bool:
    try:
        return store.exists() and store.version() > version and store.count() > 0
    except Exception:  # the table folder exists before its first manifest is committed
        return False


def kill_once_version_passes(proc, store, version, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("refresh finished before it could be killed; make the corpus larger")
        if written_past(store, version):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("index write never started")


def wanted_ids(source, embedder):
    s = load_settings()
    return {
        c.chunk_id
        for d in load_documents(source).documents
        for c in chunk_document(d, embedder.counter, s.chunk_tokens, s.chunk_overlap)
    }


def converge(source, home):
    proc = start_refresh(source, home)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return json.loads(out)


def check_index(store, source, embedder):
    ids = store.read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    assert set(ids) == wanted_ids(source, embedder)


def test_killed_refresh_converges_on_the_next_run(home, corpus, embedder):
    store = ChunkStore(load_settings().lancedb_uri)

    # 1. killed during the first build
    proc = start_refresh(corpus, home)
    kill_once_version_passes(proc, store, 0)
    partial = store.count()
    assert 0 < partial < len(wanted_ids(corpus, embedder))
    assert Retriever(store, embedder).search("model", k=3, mode="vector")  # usable while partial
    report = converge(corpus, home)
    assert report["chunks_embedded"] == len(wanted_ids(corpus, embedder)) - partial  # earlier batches kept
    check_index(store, corpus, embedder)

    # 2. killed while updating many documents: old and new rows may coexist, never the same id twice
    for path in sorted(corpus.glob("*.md"))[:30]:
        path.write_text(path.read_text().replace("## Details", "## Details (revised)"))
    version = store.version()
    proc = start_refresh(corpus, home)
    kill_once_version_passes(proc, store, version)
    ids = store.read_columns(["chunk_id"]).column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert Retriever(store, embedder).search("model", k=3)  # still answers
    converge(corpus, home)
    check_index(store, corpus, embedder)

    # the killed runs were marked failed, which released the lancedb_writer pool slot
    instance = get_instance(load_settings())
    statuses = [r.status for r in instance.get_runs(filters=dg.RunsFilter(job_name="index_refresh"))]
    assert statuses.count(dg.DagsterRunStatus.FAILURE) == 2 and statuses.count(dg.DagsterRunStatus.SUCCESS) == 2


def fill_to(folder, free_bytes: int) -> None:
    """Fill the file system of `folder` until about `free_bytes` are left."""
    left = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize - free_bytes
    with open(folder / "filler", "wb") as f:
        while left > 0:
            n = min(left, 1 << 20)
            f.write(b"\0" * n)
            left -= n


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_full_refresh_fails_clearly_and_leaves_the_live_index_intact(tmp_path, corpus, monkeypatch):
    from conftest import DEMO

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine does not let the test mount a tmpfs")
    try:
        home = mount / "home"
        env = {**os.environ, "RAGTUNE_HOME": str(home), "RAGTUNE_WRITE_BATCH": "32"}

        def ragtune(*argv):
            return subprocess.run([sys.executable, "-m", "ragtune.cli", *argv], env=env, capture_output=True, text=True)

        small = tmp_path / "small"
        small.mkdir()
        for path in sorted(corpus.iterdir())[:10]:
            (small / path.name).write_bytes(path.read_bytes())
        assert ragtune("refresh", "--source", str(small), "--json").returncode == 0
        before = ChunkStore(home / "lancedb", "chunks").chunk_ids_by_doc()
        fill_to(mount, 1 << 20)  # 1 MB left: not enough for 150 more documents
        full = ragtune("refresh", "--source", str(DEMO / "docs"), "--json")
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-2000:]
        error = json.loads(full.stdout.splitlines()[-1])["error"]
        assert "no space left" in error and str(home) in error, error  # the cause named, not just "disk I/O error"
        (mount / "filler").unlink()
        # intact: readable, every chunk it held still there (write batches that landed before the disk filled
        # are complete and kept: upserts come before deletes), and searchable
        after = ChunkStore(home / "lancedb", "chunks").chunk_ids_by_doc()
        assert all(after.get(doc, set()) >= chunks for doc, chunks in before.items())
        found = json.loads(ragtune("search", "tabular regression carbon emissions", "--json").stdout)
        assert found["hits"]
        assert ragtune("refresh", "--source", str(DEMO / "docs"), "--json").returncode == 0  # and it converges
        assert len(ChunkStore(home / "lancedb", "chunks").chunk_ids_by_doc()) >= 150
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
