"""Hybrid retrieval: vector search and full-text search fused by reciprocal rank.

Access control is a filter inside both searches (never a post-filter), so a
document outside the caller's groups cannot reach the candidate lists at all.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass

from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.live_index import LiveIndex, open_live, read_live
from ragtune.knowledge.store import ChunkStore, sql_string_list

log = logging.getLogger(__name__)

MODES = ("hybrid", "vector", "fts")
COLUMNS = ["chunk_id", "doc_id", "title", "text", "acl"]


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    similarity: float | None = None  # cosine to the query, where the vector search found this chunk

    def as_dict(self) -> dict:
        return asdict(self)


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = 60) -> list[tuple[str, float]]:
    """score(id) = sum over rankings of 1 / (k + rank), rank starting at 1; ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def acl_filter(groups: list[str] | None) -> str | None:
    """None: no filter (trusted, internal use). A list: public chunks plus those shared with a group."""
    if groups is None:
        return None
    if not groups:
        return "public = true"
    return f"public = true OR array_has_any(acl, make_array({sql_string_list(groups)}))"


class Retriever:
    """Hybrid search over one chunk table with the embedder that built it.

    Past RAGTUNE_VECTOR_INDEX_MIN_ROWS the table has an approximate vector index; `nprobes` and
    `refine_factor` trade its speed for recall (bench/search_scale.py measures the trade); `exact`
    scans every vector instead (the baseline the benchmark compares with).
    """

    NPROBES = 40  # with IVF_FLAT and sqrt(N) partitions: recall@10 0.97 at 100k, 0.99 at 1M (bench/search_scale.py)
    REFINE_FACTOR: int | None = None

    def __init__(
        self,
        store: ChunkStore,
        embedder: Embedder,
        rrf_k: int = 60,
        candidates: int = 50,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        exact: bool = False,
    ):
        self.store = store
        self.embedder = embedder
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.nprobes = nprobes or self.NPROBES
        self.refine_factor = refine_factor if refine_factor is not None else self.REFINE_FACTOR
        self.exact = exact

    def vector_search(self, table, query: str, n: int, where: str | None) -> list[dict]:
        q = table.search(self.embedder.embed([query])[0], vector_column_name="vector").distance_type("cosine")
        if self.exact:
            q = q.bypass_vector_index()
        else:
            q = q.nprobes(self.nprobes)
            if self.refine_factor:
                q = q.refine_factor(self.refine_factor)
        if where:
            q = q.where(where, prefilter=True)
        rows = q.select(COLUMNS + ["_distance"]).limit(n).to_list()
        for r in rows:
            r["score"] = 1.0 - float(r.pop("_distance"))
        return rows

    def fts_search(self, table, query: str, n: int, where: str | None) -> list[dict]:
        q = table.search(query, query_type="fts", fts_columns="text")
        if where:
            q = q.where(where, prefilter=True)
        rows = q.select(COLUMNS + ["_score"]).limit(n).to_list()
        for r in rows:
            r["score"] = float(r.pop("_score"))
        return rows

    def search(self, query: str, k: int = 5, groups: list[str] | None = None, mode: str = "hybrid") -> list[Hit]:
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
        if not query.strip():
            raise ValueError("empty query")
        if not self.store.exists() or self.store.count() == 0:
            return []
        table = self.store.table()
        where = acl_filter(groups)
        n = max(k, self.candidates)
        if mode == "vector":
            return [to_hit({**r, "similarity": r["score"]}) for r in self.vector_search(table, query, k, where)]
        if mode == "fts":
            return [to_hit(r) for r in self.fts_search(table, query, k, where)]
        vector_rows = self.vector_search(table, query, n, where)
        fts_rows = self.fts_search(table, query, n, where)
        by_id = {r["chunk_id"]: r for r in fts_rows}
        by_id.update({r["chunk_id"]: {**r, "similarity": r["score"]} for r in vector_rows})
        fused = reciprocal_rank_fusion([[r["chunk_id"] for r in vector_rows], [r["chunk_id"] for r in fts_rows]], self.rrf_k)
        return [to_hit({**by_id[cid], "score": score}) for cid, score in fused[:k]]


def to_hit(row: dict) -> Hit:
    similarity = row.get("similarity")
    return Hit(
        doc_id=row["doc_id"],
        chunk_id=row["chunk_id"],
        title=row["title"],
        text=row["text"],
        score=round(row["score"], 6),
        similarity=None if similarity is None else round(similarity, 6),
    )


class LiveRetriever:
    """The retriever over the live table with the embedder that built it, following blue/green switches.

    `current()` re-reads the pointer (a small file) and, after a switch, opens the new table and loads its
    embedder (from one reading of the pointer) before the new (live, store, retriever) triple replaces the
    old in one assignment: a search in flight finishes on the triple it started with, and none ever pairs
    a table with another table's embedder. One thread opens; the others keep the triple they have meanwhile.
    """

    def __init__(self, settings):
        self.settings = settings
        self._current: tuple[LiveIndex, ChunkStore, Retriever] | None = None
        self._opening = threading.Lock()

    def current(self) -> tuple[LiveIndex, ChunkStore, Retriever]:
        current = self._current
        if current is not None and current[0] == read_live(self.settings):
            return current
        with self._opening:
            current = self._current
            if current is None or current[0] != read_live(self.settings):
                live, store, embedder = open_live(self.settings)
                current = self._current = (live, store, Retriever(store, embedder, self.settings.rrf_k))
        return current
