"""The LanceDB chunk table: schema, upserts, deletes, indexes, versions.

Writes are ordered for crash safety: new rows are upserted (``merge_insert`` on
``chunk_id``) before stale rows are deleted, so the table is usable after a kill
at any point and the next refresh converges.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from ragtune.locks import exclusive_lock

log = logging.getLogger(__name__)

FTS_COLUMN = "text"
WRITE_LOCK = ".ragtune-write.lock"  # in a local index folder; LanceDB only lists *.lance entries


def chunk_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
            pa.field("position", pa.int32()),
            pa.field("n_tokens", pa.int32()),
            pa.field("acl", pa.list_(pa.string())),
            pa.field("public", pa.bool_()),  # no acl groups: visible to everyone
            pa.field("source", pa.string()),
            pa.field("doc_hash", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def sql_string_list(values) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


# Chosen by bench/search_scale.py (docs/benchmarks.md): IVF_FLAT with about sqrt(N) partitions and 40 probes
# kept recall@10 >= 0.95 at 100k and 1M near-duplicate chunks in 9-15 ms; IVF_PQ reached 0.27 (0.81 refined).
VECTOR_INDEX_TYPE = "IVF_FLAT"
# Compaction (rewriting small fragments into large ones) is most of what `optimize()` costs: 50 s of a
# 1% refresh at 1M rows, against 4 s to fold the new rows into the indexes. A refresh always folds (rows
# left unindexed make a hybrid search 4x slower at 1M) and compacts only once the table has this many
# fragments (each refresh adds about one per write batch).
COMPACT_FRAGMENTS = 64


def create_vector_index(table, rows: int, dim: int, index_type: str = VECTOR_INDEX_TYPE) -> None:
    """An approximate cosine index over `vector`, with about sqrt(rows) partitions (the usual IVF rule)."""
    partitions = max(1, int(rows**0.5))
    options = {"num_sub_vectors": dim // 8} if index_type.endswith("PQ") else {}
    if "HNSW" in index_type:
        partitions = max(1, partitions // 4)  # each partition holds a graph: fewer, larger ones
    table.create_index(metric="cosine", index_type=index_type, num_partitions=partitions, replace=True, **options)


class ChunkStore:
    """A small interface over one LanceDB table of embedded chunks."""

    def __init__(self, uri: Path | str, table_name: str = "chunks", dim: int = 384):
        import lancedb

        self.uri = str(uri)
        self.table_name = table_name
        self.dim = dim
        self.local = "://" not in self.uri  # a folder; object storage (s3://, gs://, az://) needs no creating
        if self.local:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(self.uri)

    # -- reading ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.table_name in self.db.table_names()

    def table(self):
        if not self.exists():
            return self.db.create_table(self.table_name, schema=chunk_schema(self.dim), exist_ok=True)
        return self.db.open_table(self.table_name)

    def version(self) -> int:
        return int(self.table().version) if self.exists() else 0

    def count(self) -> int:
        return self.table().count_rows() if self.exists() else 0

    def has_fts_index(self) -> bool:
        return self.exists() and any(tuple(ix.columns) == (FTS_COLUMN,) for ix in self.table().list_indices())

    def read_columns(self, columns: list[str]) -> pa.Table:
        if not self.exists():
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        return self.table().to_lance().to_table(columns=columns)

    def chunk_ids_by_doc(self) -> dict[str, set[str]]:
        rows = self.read_columns(["chunk_id", "doc_id"]).to_pydict()
        by_doc: dict[str, set[str]] = {}
        for chunk_id, doc_id in zip(rows["chunk_id"], rows["doc_id"]):
            by_doc.setdefault(doc_id, set()).add(chunk_id)
        return by_doc

    def chunks(self, chunk_ids: list[str], columns: tuple[str, ...] = ("chunk_id", "doc_id", "title", "text")) -> dict[str, dict]:
        """The rows of these chunk ids that are in the index, by chunk id."""
        if not chunk_ids or not self.exists():
            return {}
        rows = self.table().search().where(f"chunk_id IN ({sql_string_list(chunk_ids)})").select(list(columns))
        return {r["chunk_id"]: r for r in rows.limit(len(chunk_ids)).to_list()}

    def known_doc_ids(self, doc_ids: list[str]) -> set[str]:
        """Those of `doc_ids` that have chunks in the index."""
        if not doc_ids or not self.exists():
            return set()
        rows = self.table().search().where(f"doc_id IN ({sql_string_list(doc_ids)})").select(["doc_id"])
        return {r["doc_id"] for r in rows.limit(100_000).to_list()}

    def sources_by_doc(self) -> dict[str, str]:
        rows = self.read_columns(["doc_id", "source"]).to_pydict()
        return dict(zip(rows["doc_id"], rows["source"]))

    # -- writing ---------------------------------------------------------------
    @contextmanager
    def writing(self):
        """Hold the index for writing, across processes: one writer per local index.

        Two refreshes must not both plan against the same old state and embed the
        same chunks. Dagster's `lancedb_writer` pool serialises them on PostgreSQL,
        but on the embedded sqlite instance its slot claims race, so a local index
        also takes a file lock. On object storage the pool is the only guard: run
        the PostgreSQL profile there (docs/scaling.md).
        """
        if not self.local:
            yield
            return
        with exclusive_lock(Path(self.uri) / WRITE_LOCK):
            yield

    def upsert(self, rows: list[dict], vectors: np.ndarray) -> int:
        if not rows:
            return 0
        if vectors.shape != (len(rows), self.dim):
            raise ValueError(f"expected vectors of shape ({len(rows)}, {self.dim}), got {vectors.shape}")
        data = {name: [r[name] for r in rows] for name in chunk_schema(self.dim).names if name != "vector"}
        data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim)
        batch = pa.table(data, schema=chunk_schema(self.dim))
        (self.table().merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(batch))
        return len(rows)

    def delete_chunks(self, chunk_ids: list[str], batch: int = 500) -> int:
        table = self.table()
        for start in range(0, len(chunk_ids), batch):
            table.delete(f"chunk_id IN ({sql_string_list(chunk_ids[start : start + batch])})")
        return len(chunk_ids)

    def ensure_indexes(self, vector_index_min_rows: int, keep_versions_days: int = 30) -> list[str]:
        """Keep the full-text index (always) and, past a size threshold, a vector index current."""
        table = self.table()
        indexed = {tuple(ix.columns): ix for ix in table.list_indices()}
        done = []
        if (FTS_COLUMN,) not in indexed:
            table.create_fts_index(FTS_COLUMN, replace=True)
            done.append("fts:created")
        rows = table.count_rows()
        if ("vector",) not in indexed and rows >= vector_index_min_rows:
            create_vector_index(table, rows, self.dim)
            done.append("vector:created")
        if indexed:
            # Versions younger than keep_versions_days stay available to `ragtune index rollback`.
            keep = timedelta(days=keep_versions_days)
            dataset = table.to_lance()
            dataset.optimize.optimize_indices()  # new rows into the existing indexes
            done.append("optimized")
            if len(dataset.get_fragments()) > COMPACT_FRAGMENTS:
                table.optimize(cleanup_older_than=keep)  # compact, then clean up
                done.append("compacted")
            else:
                table.cleanup_old_versions(older_than=keep)
        return done

    def restore(self, version: int) -> int:
        table = self.table()
        known = {v["version"] for v in table.list_versions()}
        if version not in known:
            raise ValueError(f"index version {version} does not exist (known: {min(known)}..{max(known)})")
        table.restore(version)
        return int(self.table().version)
