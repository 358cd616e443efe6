"""Blue/green index builds: a table embedded with a new embedder beside the live one, checked, then switched.

    built = build_green(settings, embedder, "3")            # chunks__embedder_3_<fingerprint>, filled from the live table
    ...evaluate retrieval on it...
    promote_green(settings, built["table"], embedder, "3", reason="gate passed")   # catch up, check, switch
    switch_back(settings, reason="worse search")            # the table live before, caught up the same way

The green table is filled from the live (blue) table's rows, not from the source folder, so it holds
exactly what users search today. `sync_rows` copies what green lacks and deletes what blue no longer
has; it is what builds green, what resumes a build that was killed (the rows already embedded stay),
and what catches a table up with refreshes that landed on the live one since. A switch happens under
the index write lock (the live table is read again inside it), after a last catch-up and the checks,
in one atomic replace of the pointer; until then the live table is never written by a build. A switch
back is the same move towards the previous table: only chunks that changed since are embedded (none
when nothing changed), so a rollback never serves deleted documents or old access lists.

Tables are named by embedder version and weights fingerprint, so a version number reused by a fresh
registry over an old data home can never resume (or drop) another embedder's table.
"""

from __future__ import annotations

import time

import numpy as np

from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.indexing import passage_text
from ragtune.knowledge.live_index import LiveIndex, embedder_for, live_store, read_live, read_previous, switch_live
from ragtune.knowledge.store import ChunkStore, chunk_schema
from ragtune.settings import Settings

ROW_COLUMNS = [name for name in chunk_schema(1).names if name != "vector"]


class GreenCheckFailed(RuntimeError):
    """The new table does not hold what the live one holds, or its vectors are unusable."""


def green_name(settings: Settings, embedder_version: str, fingerprint: str) -> str:
    return f"{settings.table_name}__embedder_{embedder_version}_{fingerprint[:8]}"


def row_keys(store: ChunkStore) -> dict[str, str]:
    """chunk_id -> doc_hash: a chunk whose document changed is a different row."""
    columns = store.read_columns(["chunk_id", "doc_hash"]).to_pydict()
    return dict(zip(columns["chunk_id"], columns["doc_hash"]))


def sync_rows(blue: ChunkStore, green: ChunkStore, embedder: Embedder, batch: int = 256, progress=None) -> dict:
    """Make green hold blue's rows, embedded by `embedder`: embed what it lacks, delete what blue dropped."""
    wanted, have = row_keys(blue), row_keys(green)
    missing = {chunk_id for chunk_id, doc_hash in wanted.items() if have.get(chunk_id) != doc_hash}
    stale = [chunk_id for chunk_id in have if chunk_id not in wanted]
    rows = blue.table().to_lance().to_table(columns=ROW_COLUMNS).to_pylist() if missing else []
    rows = [r for r in rows if r["chunk_id"] in missing]
    embedded = 0
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        embedded += green.upsert(part, embedder.embed([passage_text(r["title"], r["text"]) for r in part]))
        if progress:
            progress(embedded, len(rows))
    if stale:
        green.delete_chunks(stale)
    return {"embedded": embedded, "deleted": len(stale)}


def check_green(blue: ChunkStore, green: ChunkStore) -> dict:
    """The same chunks as the live table, each with a finite unit vector (read a batch at a time)."""
    wanted, have = row_keys(blue), row_keys(green)
    if wanted != have:
        lacking, extra = len(set(wanted) - set(have)), len(set(have) - set(wanted))
        raise GreenCheckFailed(
            f"{green.table_name}: {len(have)} chunks against {len(wanted)} live ({lacking} missing, {extra} extra)"
        )
    if have:
        for part in green.table().to_lance().to_batches(columns=["vector"], batch_size=8192):
            vectors = part.column("vector").flatten().to_numpy(zero_copy_only=False).reshape(-1, green.dim)
            if not np.isfinite(vectors).all() or np.abs(np.linalg.norm(vectors, axis=1) - 1).max() > 0.01:
                raise GreenCheckFailed(f"{green.table_name}: vectors that are not finite unit vectors")
    return {"chunks": len(have), "dim": green.dim}


def build_green(settings: Settings, embedder: Embedder, embedder_version: str, progress=None) -> dict:
    """Fill (or resume filling) the green table for `embedder` from the live table; the live one is only read."""
    started = time.perf_counter()
    blue = live_store(settings)
    green = ChunkStore(settings.lancedb_uri, green_name(settings, embedder_version, embedder.fingerprint), embedder.dim)
    if green.table_name == blue.table_name:
        raise ValueError(f"{green.table_name} is the live table; a green build needs another embedder")
    synced = sync_rows(blue, green, embedder, settings.write_batch, progress)
    if green.count():
        green.ensure_indexes(settings.vector_index_min_rows, settings.keep_index_versions_days)
    return {"table": green.table_name, **synced, **check_green(blue, green), "seconds": round(time.perf_counter() - started, 1)}


def discard_green(settings: Settings, table: str) -> bool:
    """Drop a green table that will not go live (its embedder was rejected); never the live or previous one."""
    store = ChunkStore(settings.lancedb_uri, table)
    keep = {read_live(settings).table}
    try:
        keep.add(read_previous(settings).table)
    except ValueError:
        pass
    if table in keep or not store.exists():
        return False
    store.db.drop_table(table)
    return True


def promote_green(settings: Settings, table: str, embedder: Embedder, embedder_version: str, reason: str = "") -> dict:
    """Under the index write lock: catch `table` up with the live table, check it, make it live."""
    green = ChunkStore(settings.lancedb_uri, table, embedder.dim)
    with live_store(settings).writing():  # one lock for every table in the index folder
        blue = live_store(settings)  # read again under the lock: the table live now, whatever waited before
        caught_up = sync_rows(blue, green, embedder, settings.write_batch)
        if caught_up["embedded"] or caught_up["deleted"]:
            green.ensure_indexes(settings.vector_index_min_rows, settings.keep_index_versions_days)
        checked = check_green(blue, green)
        switched = switch_live(settings, LiveIndex(table, embedder.model_path, embedder_version, embedder.fingerprint), reason)
    return {**switched, "caught_up": caught_up, **checked, "from_table": blue.table_name}


def switch_back(settings: Settings, reason: str) -> dict:
    """Make the table live before the last switch live again, with its own embedder, caught up first."""
    previous = read_previous(settings)
    embedder = embedder_for(settings, previous)
    return promote_green(settings, previous.table, embedder, previous.embedder_version, reason or "rollback")
