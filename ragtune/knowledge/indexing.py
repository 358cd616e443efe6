"""Bring the chunk table in line with the current chunks: embed only what is new.

`plan_sync` is a pure diff of wanted chunk ids against stored ones; `apply_sync`
embeds and upserts the new chunks in batches (each batch durable on its own),
then deletes the stale ones, then refreshes the indexes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ragtune.jsonl import append_jsonl, read_jsonl
from ragtune.knowledge.chunker import Chunk
from ragtune.knowledge.documents import LoadResult
from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.store import ChunkStore


class LiveIndexMoved(RuntimeError):
    """A blue/green switch made another table live while this refresh waited for the write lock."""


class EmptySourceError(RuntimeError):
    """The source produced no documents while the index holds some: refusing to delete them all."""


@dataclass
class SyncPlan:
    to_embed: list[Chunk]
    stale_ids: list[str]
    docs_added: list[str]
    docs_updated: list[str]
    docs_unchanged: list[str]
    docs_deleted: list[str]
    docs_kept_unreadable: list[str]


@dataclass
class IndexReport:
    docs_added: int = 0
    docs_updated: int = 0
    docs_unchanged: int = 0
    docs_deleted: int = 0
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    chunks_total: int = 0
    version_before: int = 0
    index_version: int = 0
    indexes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lock_wait_s: float = 0.0  # time spent waiting for another writer of the same index

    def as_dict(self) -> dict:
        return asdict(self)


def protected_docs(load: LoadResult, stored_sources: dict[str, str]) -> set[str]:
    """Docs whose file could not be read this time keep their chunks: no data lost to a bad day."""
    bad = [s.path for s in load.skipped if s.keep_indexed]
    return {
        doc_id
        for doc_id, source in stored_sources.items()
        if any(source == path or source.startswith(path + ":") for path in bad)
    }


def plan_sync(chunks: list[Chunk], stored: dict[str, set[str]], protected: set[str] = frozenset()) -> SyncPlan:
    wanted: dict[str, set[str]] = {}
    for chunk in chunks:
        wanted.setdefault(chunk.doc_id, set()).add(chunk.chunk_id)
    stored_ids = set().union(*stored.values()) if stored else set()
    to_embed = [c for c in chunks if c.chunk_id not in stored_ids]
    stale = sorted(cid for doc_id, ids in stored.items() if doc_id not in protected for cid in ids - wanted.get(doc_id, set()))
    added = sorted(d for d in wanted if d not in stored)
    updated = sorted(d for d in wanted if d in stored and wanted[d] != stored[d])
    unchanged = sorted(d for d in wanted if d in stored and wanted[d] == stored[d])
    deleted = sorted(d for d in stored if d not in wanted and d not in protected)
    kept = sorted(d for d in stored if d not in wanted and d in protected)
    return SyncPlan(to_embed, stale, added, updated, unchanged, deleted, kept)


def chunk_row(chunk: Chunk) -> dict:
    return {
        "chunk_id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "text": chunk.text,
        "position": chunk.position,
        "n_tokens": chunk.n_tokens,
        "acl": list(chunk.acl),
        "public": not chunk.acl,
        "source": chunk.source,
        "doc_hash": chunk.doc_hash,
    }


def passage_text(title: str, text: str) -> str:
    """What the embedder sees of a chunk: the title gives a short chunk its context. The one definition for
    indexing, green tables and embedder training."""
    return f"{title}\n\n{text}"


def embedding_text(chunk: Chunk) -> str:
    return passage_text(chunk.title, chunk.text)


def apply_sync(
    plan: SyncPlan,
    store: ChunkStore,
    embedder: Embedder,
    *,
    write_batch: int = 256,
    vector_index_min_rows: int = 100_000,
    keep_versions_days: int = 30,
    progress=None,
) -> IndexReport:
    """Embed and upsert new chunks, then delete stale ones, then refresh indexes."""
    report = IndexReport(version_before=store.version())
    for start in range(0, len(plan.to_embed), write_batch):
        batch = plan.to_embed[start : start + write_batch]
        vectors = embedder.embed([embedding_text(c) for c in batch])
        report.chunks_embedded += store.upsert([chunk_row(c) for c in batch], vectors)
        if progress:
            progress(report.chunks_embedded, len(plan.to_embed))
    report.chunks_deleted = store.delete_chunks(plan.stale_ids)
    if store.count() and (report.chunks_embedded or report.chunks_deleted or not store.has_fts_index()):
        report.indexes = store.ensure_indexes(vector_index_min_rows, keep_versions_days)
    report.docs_added = len(plan.docs_added)
    report.docs_updated = len(plan.docs_updated)
    report.docs_unchanged = len(plan.docs_unchanged)
    report.docs_deleted = len(plan.docs_deleted)
    report.chunks_total = store.count()
    report.index_version = store.version()
    return report


def refresh_index(
    load: LoadResult,
    chunks: list[Chunk],
    store: ChunkStore,
    embedder: Embedder,
    *,
    allow_empty: bool = False,
    still_live=None,
    **kwargs,
) -> IndexReport:
    """Sync the store with the loaded documents under the write lock. `still_live()`, checked once the lock is
    held, says whether `store` is still the live table: False raises LiveIndexMoved (open the live one again)."""
    started = time.perf_counter()
    with store.writing():
        waited = time.perf_counter() - started
        if still_live is not None and not still_live():
            raise LiveIndexMoved(f"{store.table_name} stopped being the live table while this refresh waited")
        if not load.documents and store.count() and not allow_empty:
            raise EmptySourceError(
                f"the source produced no documents but the index holds {store.count()} chunks; "
                "refusing to delete them (fix the source, or allow an empty source explicitly)"
            )
        plan = plan_sync(chunks, store.chunk_ids_by_doc(), protected_docs(load, store.sources_by_doc()))
        report = apply_sync(plan, store, embedder, **kwargs)
    report.lock_wait_s = round(waited, 3)
    report.skipped = [{"path": s.path, "reason": s.reason} for s in load.skipped]
    report.notes = list(load.notes) + [f"kept indexed (file unreadable this run): {d}" for d in plan.docs_kept_unreadable]
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def record_history(path: Path, action: str, **fields) -> dict:
    """Append one line to the index history (refreshes and rollbacks)."""
    entry = {"ts": datetime.now(UTC).isoformat(timespec="seconds"), "action": action, **fields}
    append_jsonl(path, entry)
    return entry


def read_history(path: Path) -> list[dict]:
    return read_jsonl(path)
