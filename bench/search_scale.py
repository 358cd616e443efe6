"""Search at 100k and 1M chunks: hybrid latency with the vector index against an exact scan, ANN recall@10,
full-text index build time, a 1% refresh against a full build, and peak memory.

The corpus is real: the 2,384 chunks of APIBench HuggingFace, embedded once, replicated until the
table holds N rows. Replica r of a chunk drops a random 10% of its words (so full-text scores differ
between copies) and adds Gaussian noise to its vector (sigma 0.02 per dimension, about a third of a
real vector's per-dimension spread; renormalised), so copies are near-duplicates, the hard case for an
approximate index, rather than exact ones. Queries are 200 real APIBench questions.

For each vector index configuration (type, partitions, nprobes, refine factor), ANN recall@10 is the
overlap of its top 10 with the exact scan's top 10 on the same table; the configuration chosen is the
fastest with recall@10 >= 0.95, and the product's defaults follow it (RAGTUNE_VECTOR_NPROBES,
RAGTUNE_VECTOR_REFINE_FACTOR). A full build writes every row and builds both indexes; a 1% refresh
upserts 1% of the rows (new text and vectors) and folds them into the indexes as a nightly refresh
does (search latency is measured again after it); `compaction_s` is what a refresh pays on the
night the table reaches COMPACT_FRAGMENTS fragments (ragtune/knowledge/store.py). Embedding time is left out of both (vectors are precomputed); it scales with the chunks changed.

Targets on 2 cores: hybrid p50 <= 20 ms at 100k and <= 50 ms at 1M; ANN recall@10 >= 0.95;
1% refresh <= 0.10 x full build.

    python bench/search_scale.py [--sizes 100000 1000000] [--queries 200]
"""

import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import import_corpus, write_result

from evaluation.metrics import percentile
from ragtune.jsonl import read_jsonl
from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.indexing import chunk_row, embedding_text
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore, chunk_schema, create_vector_index
from ragtune.settings import load_settings

SIGMA = 0.02
CONFIGS = [  # (index type, nprobes, refine factor)
    ("IVF_FLAT", 20, None),
    ("IVF_FLAT", 40, None),
    ("IVF_SQ", 40, 5),
    ("IVF_PQ", 50, 20),
    ("IVF_HNSW_SQ", 20, 10),
    ("IVF_HNSW_SQ", 50, 10),
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def replicas(rows: list[dict], vectors: np.ndarray, n: int, seed: int = 0):
    """Batches of (rows, vectors) until n rows: copy r of each chunk with 10% of its words dropped and noise added."""
    rng = np.random.default_rng(seed)
    made, r = 0, 0
    while made < n:
        take = min(len(rows), n - made)
        batch = []
        for row in rows[:take]:
            words = row["text"].split()
            keep = [w for w in words if rng.random() >= 0.1] if r else words
            batch.append({**row, "chunk_id": f"{row['chunk_id']}~{r}", "doc_id": f"{row['doc_id']}~{r}", "text": " ".join(keep)})
        noisy = vectors[:take] + (rng.normal(0, SIGMA, vectors[:take].shape) if r else 0)
        noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
        yield batch, noisy
        made, r = made + take, r + 1


def arrow_batch(rows: list[dict], vectors: np.ndarray, dim: int) -> pa.Table:
    schema = chunk_schema(dim)
    data = {name: [r[name] for r in rows] for name in schema.names if name != "vector"}
    data["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    return pa.table(data, schema=schema)


def build_vector_index(table, kind: str, rows: int, dim: int) -> float:
    start = time.perf_counter()
    create_vector_index(table, rows, dim, kind)
    return time.perf_counter() - start


def add_rows(db, table, data: pa.Table):
    if table is None:
        return db.create_table("chunks", data=data)
    table.add(data)
    return table


def top_ids(table, vector: np.ndarray, k: int, nprobes=None, refine=None, exact=False) -> tuple[list[str], float]:
    start = time.perf_counter()
    q = table.search(vector, vector_column_name="vector").distance_type("cosine").limit(k).select(["chunk_id"])
    if exact:
        q = q.bypass_vector_index()
    else:
        if nprobes:
            q = q.nprobes(nprobes)
        if refine:
            q = q.refine_factor(refine)
    ids = [r["chunk_id"] for r in q.to_list()]
    return ids, (time.perf_counter() - start) * 1000


def hybrid_latency(retriever: Retriever, queries: list[str]) -> dict:
    """p50/p95 of a hybrid search as served: query embedding, both searches, fusion."""
    retriever.search(queries[0], k=5)
    latencies = []
    for question in queries:
        start = time.perf_counter()
        retriever.search(question, k=5)
        latencies.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(percentile(latencies, 50), 1), "p95_ms": round(percentile(latencies, 95), 1)}


def measure(
    size: int,
    rows: list[dict],
    vectors: np.ndarray,
    queries: list[str],
    qvectors: np.ndarray,
    embedder,
    work: Path,
    configs: list[tuple],
) -> dict:
    store = ChunkStore(work / f"lancedb-{size}", "chunks", embedder.dim)
    db, dim = store.db, embedder.dim
    start = time.perf_counter()
    table, pending = None, []
    for batch, noisy in replicas(rows, vectors, size):  # written 50k rows at a time: few, large fragments
        pending.append(arrow_batch(batch, noisy, dim))
        if sum(len(t) for t in pending) >= 50_000:
            data, pending = pa.concat_tables(pending), []
            table = add_rows(db, table, data)
    if pending:
        table = add_rows(db, table, pa.concat_tables(pending))
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    table.create_fts_index("text", replace=True)
    fts_s = time.perf_counter() - start

    exact = [top_ids(table, v, 10, exact=True) for v in qvectors]
    result = {
        "rows": table.count_rows(),
        "write_s": round(write_s, 1),
        "fts_index_s": round(fts_s, 1),
        "exact_vector_p50_ms": round(percentile([ms for _, ms in exact], 50), 1),
        "configs": [],
    }
    built_kind, index_s = None, {}
    for kind, nprobes, refine in configs:
        if kind != built_kind:
            index_s[kind] = build_vector_index(table, kind, size, dim)
            built_kind = kind
        found = [top_ids(table, v, 10, nprobes, refine) for v in qvectors]
        recall = float(np.mean([len(set(ids) & set(truth)) / 10 for (ids, _), (truth, _) in zip(found, exact)]))
        result["configs"].append(
            {
                "index": kind,
                "nprobes": nprobes,
                "refine_factor": refine,
                "recall@10": round(recall, 4),
                "vector_p50_ms": round(percentile([ms for _, ms in found], 50), 1),
                "index_build_s": round(index_s[kind], 1),
            }
        )
    eligible = [c for c in result["configs"] if c["recall@10"] >= 0.95]
    # the fastest that meets the recall target; when none does, the most accurate
    chosen = min(eligible, key=lambda c: c["vector_p50_ms"]) if eligible else max(result["configs"], key=lambda c: c["recall@10"])
    if chosen["index"] != built_kind:
        build_vector_index(table, chosen["index"], size, dim)
    result["chosen"] = chosen
    result["full_build_s"] = round(write_s + fts_s + index_s[chosen["index"]], 1)

    # hybrid search as served (query embedding, both searches, fusion): chosen index against an exact scan
    retriever = Retriever(store, embedder, nprobes=chosen["nprobes"], refine_factor=chosen["refine_factor"])
    exact_retriever = Retriever(store, embedder, exact=True)
    embedding = []
    for question in queries:  # the query's embedding alone: the part of a search no index can speed up
        start = time.perf_counter()
        embedder.embed([question])
        embedding.append((time.perf_counter() - start) * 1000)
    result["query_embedding"] = {"p50_ms": round(percentile(embedding, 50), 1), "p95_ms": round(percentile(embedding, 95), 1)}
    for name, r in (("hybrid_index", retriever), ("hybrid_exact", exact_retriever)):
        result[name] = hybrid_latency(r, queries)
        result[name]["p50_ms_without_embedding"] = round(result[name]["p50_ms"] - result["query_embedding"]["p50_ms"], 1)

    # a 1% refresh: upsert 1% of the rows with new text and vectors, fold them into the indexes
    changed = max(1, size // 100)
    picked = table.search().select(chunk_schema(dim).names[:-1]).limit(changed).to_list()
    fresh = np.random.default_rng(1).normal(0, 1, (changed, dim)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    start = time.perf_counter()
    store.upsert([{**r, "text": r["text"] + " (revised)"} for r in picked], fresh)
    upserted = time.perf_counter()
    store.ensure_indexes(vector_index_min_rows=10**12)  # fold the new rows into the existing indexes
    result["refresh_1pct_s"] = round(time.perf_counter() - start, 1)
    result["refresh_1pct_parts_s"] = {"upsert": round(upserted - start, 1), "indexes": round(time.perf_counter() - upserted, 1)}
    result["hybrid_index_after_refresh"] = hybrid_latency(retriever, queries)
    start = time.perf_counter()
    store.table().optimize()  # compaction too: what a refresh pays once the table has COMPACT_FRAGMENTS fragments
    result["compaction_s"] = round(time.perf_counter() - start, 1)
    result["refresh_ratio"] = round(result["refresh_1pct_s"] / result["full_build_s"], 3)
    result["peak_rss_mb"] = round(peak_rss_mb(), 0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--indexes", nargs="+", help="index types to try (default: all in CONFIGS)")
    args = parser.parse_args()
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-scale-"))
    import_corpus(work / "corpus")
    embedder = Embedder(settings.embedder_path(), dtype="float32")
    load = load_documents(work / "corpus" / "docs")
    chunks = [
        c for d in load.documents for c in chunk_document(d, embedder.counter, settings.chunk_tokens, settings.chunk_overlap)
    ]
    rows = [chunk_row(c) for c in chunks]
    queries = [item["question"] for item in read_jsonl(work / "corpus" / "eval.jsonl")[: args.queries]]
    # embedding the base chunks takes minutes on 2 cores; reruns reuse them (keyed by embedder and inputs)
    key = hashlib.sha256("\n".join([embedder.fingerprint, *map(embedding_text, chunks), *queries]).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"ragtune-bench-scale-{key}.npz"
    if not cache.exists():
        np.savez(cache, vectors=embedder.embed([embedding_text(c) for c in chunks]), queries=embedder.embed(queries))
    saved = np.load(cache)
    vectors, qvectors = saved["vectors"], saved["queries"]
    configs = [c for c in CONFIGS if not args.indexes or c[0] in args.indexes]
    sizes = {str(size): measure(size, rows, vectors, queries, qvectors, embedder, work, configs) for size in args.sizes}
    targets = {"100000": 20, "1000000": 50}
    write_result(
        "search_scale",
        {
            "base_chunks": len(rows),
            "queries": len(queries),
            "replication": f"copies drop 10% of words; vectors + N(0, {SIGMA}) per dimension, renormalised",
            "sizes": sizes,
            "targets": {"hybrid_p50_ms": targets, "ann_recall@10": ">= 0.95", "refresh_ratio": "<= 0.10"},
            "met": {
                size: {
                    "hybrid_p50": r["hybrid_index"]["p50_ms"] <= targets.get(size, 50),
                    "ann_recall": r["chosen"]["recall@10"] >= 0.95,
                    "refresh": r["refresh_ratio"] <= 0.10,
                }
                for size, r in sizes.items()
            },
        },
    )


if __name__ == "__main__":
    main()
