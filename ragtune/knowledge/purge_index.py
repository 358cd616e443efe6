"""Take documents out of the index for good: every table (live, previous, green builds), every retained version.

A delete alone leaves the rows in every earlier version, where `ragtune index rollback` and time travel
still read them, and in the data files, masked by a deletion file. A purge therefore, per table and under
the index's write lock:
1. deletes the documents' rows;
2. compacts with every deletion materialised, so the files that held them are rewritten without them;
3. rebuilds the full-text and vector indexes, whose files held their words and vectors;
4. removes every version but the new one (the rollback points before the purge go with it);
5. reads each version left, to prove none returns the documents.

Each step is safe to repeat, so a purge killed midway converges when run again. The purged ids are kept in
`index/purged_documents.json` (written first), and a refresh skips those documents if they are still in the
source, so a nightly refresh cannot bring them back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ragtune.knowledge.documents import LoadResult, Skipped
from ragtune.knowledge.store import FTS_COLUMN, ChunkStore, create_vector_index, sql_string_list
from ragtune.settings import Settings


def purged_path(settings: Settings) -> Path:
    return settings.home_dir / "index" / "purged_documents.json"


def read_purged(settings: Settings) -> dict[str, dict]:
    """doc id -> {at, reason, by} of every document purged from this index."""
    path = purged_path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def remember_purged(settings: Settings, doc_ids: list[str], reason: str, by: str) -> None:
    purged = read_purged(settings)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for doc_id in doc_ids:
        purged.setdefault(doc_id, {"at": at, "reason": reason, "by": by})
    path = purged_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(purged, indent=1, sort_keys=True))
    partial.replace(path)


def without_purged(load: LoadResult, purged: dict[str, dict]) -> LoadResult:
    """`load` with purged documents moved to `skipped`, each with why (their indexed chunks are not kept)."""
    kept, skipped = [], list(load.skipped)
    for doc in load.documents:
        if doc.doc_id in purged:
            p = purged[doc.doc_id]
            why = f"purged on {p['at']} ({p['reason']}); remove it from the source"
            skipped.append(Skipped(doc.metadata.get("source", doc.doc_id), why, keep_indexed=False))
        else:
            kept.append(doc)
    return LoadResult(documents=kept, skipped=skipped, notes=load.notes)


def index_tables(settings: Settings, store: ChunkStore) -> list[str]:
    """The configured table and every table derived from it (blue/green builds, the previous live one)."""
    return sorted(t for t in store.db.table_names() if t == settings.table_name or t.startswith(f"{settings.table_name}__"))


def purge_table(store: ChunkStore, doc_ids: list[str]) -> dict:
    """Steps 1-5 of the module docstring on one table; the caller holds the write lock."""
    table = store.table()
    where = f"doc_id IN ({sql_string_list(doc_ids)})"
    versions_before = [v["version"] for v in table.list_versions()]
    rows = table.count_rows(where)
    if rows:
        table.delete(where)
    table.compact_files(materialize_deletions=True, materialize_deletions_threshold=0.0)
    for index in table.list_indices():
        if tuple(index.columns) == (FTS_COLUMN,):
            table.create_fts_index(FTS_COLUMN, replace=True)
        elif tuple(index.columns) == ("vector",):
            create_vector_index(table, table.count_rows(), table.schema.field("vector").type.list_size, index.index_type)
    table.cleanup_old_versions(older_than=timedelta(0), delete_unverified=True)  # we hold the write lock
    table = store.table()
    left = [v["version"] for v in table.list_versions()]
    for version in left:
        table.checkout(version)
        if table.count_rows(where):
            raise RuntimeError(f"purge of {store.table_name}: version {version} still returns the documents")
    return {
        "table": store.table_name,
        "rows_deleted": rows,
        "versions_removed": len(set(versions_before) - set(left)),
        "version_after": max(left),
    }


def purge_index(settings: Settings, doc_ids: list[str]) -> list[dict]:
    """Purge `doc_ids` from every table of the index (see the module docstring); one report per table."""
    store = ChunkStore(settings.lancedb_uri, settings.table_name)
    with store.writing():
        return [purge_table(ChunkStore(settings.lancedb_uri, name), doc_ids) for name in index_tables(settings, store)]


def purged_before(history: list[dict], table: str, version: int) -> dict | None:
    """The purge that removed `version` of `table` (every version before its version_after), if one did."""
    for entry in history:
        if entry.get("action") != "purge":
            continue
        for t in entry.get("tables", []):
            if t["table"] == table and version < t["version_after"]:
                return entry
    return None
