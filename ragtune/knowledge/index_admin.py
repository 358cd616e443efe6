"""Index time travel: status, history and rollback to an earlier LanceDB version."""

from __future__ import annotations

from ragtune.knowledge.indexing import read_history, record_history
from ragtune.knowledge.live_index import live_store
from ragtune.knowledge.purge_index import purged_before
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import Settings


class NoIndexError(RuntimeError):
    pass


def open_store(settings: Settings) -> ChunkStore:
    store = live_store(settings)
    if not store.exists():
        raise NoIndexError(f"no index in {settings.lancedb_uri}; run `ragtune refresh --source DIR` first")
    return store


def index_status(settings: Settings) -> dict:
    store = open_store(settings)
    table = store.table()
    return {
        "index_version": store.version(),
        "chunks": store.count(),
        "documents": len(store.chunk_ids_by_doc()),
        "indexes": sorted(ix.index_type + ":" + ",".join(ix.columns) for ix in table.list_indices()),
        "uri": str(settings.lancedb_uri),
    }


def default_rollback_target(history: list[dict], current: int, table: str = "chunks", unnamed: str = "chunks") -> int:
    """The version before the most recent refresh of `table` that changed something (entries written before
    blue/green name no table: they were all of the configured one, `unnamed`)."""
    for entry in reversed(history):
        if entry.get("table", unnamed) != table:
            continue
        if entry.get("action") == "refresh" and entry.get("version_before") and entry["version_before"] != current:
            return int(entry["version_before"])
    raise ValueError("no earlier index version recorded by a refresh; pass --to VERSION")


def rollback_index(settings: Settings, to: int | None = None, reason: str = "") -> dict:
    store = open_store(settings)
    with store.writing():
        before = store.version()
        target = (
            to
            if to is not None
            else default_rollback_target(read_history(settings.index_history), before, store.table_name, settings.table_name)
        )
        purge = purged_before(read_history(settings.index_history), store.table_name, target)
        if purge and target not in {v["version"] for v in store.table().list_versions()}:
            raise ValueError(
                f"index version {target} is gone: the purge of {purge['ts']} ({purge['reason']}) removed every "
                f"version before it; see `ragtune index history`"
            )
        after = store.restore(target)
    return record_history(
        settings.index_history,
        "rollback",
        table=store.table_name,
        version_before=before,
        restored_from=target,
        version_after=after,
        chunks=store.count(),
        reason=reason,
    )
