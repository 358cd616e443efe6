"""Retrieval quality and latency on the APIBench HuggingFace questions (gold = the question's API).

recall@1, recall@5 and MRR for vector-only, full-text-only and hybrid search;
p50/p95 query latency of each. Targets: hybrid >= each single mode on recall@5;
hybrid p50 <= 50 ms on 2 cores.

    python bench/search.py [--limit N]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import import_corpus, write_result

from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.embedder import embedder_for
from ragtune.knowledge.indexing import refresh_index
from ragtune.knowledge.retriever import MODES, Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings


def score(retriever: Retriever, items: list[dict], mode: str, k: int = 5) -> dict:
    hits1 = hits5 = rr = 0.0
    latencies = []
    for item in items:
        start = time.perf_counter()
        hits = retriever.search(item["question"], k=k * 3, mode=mode)  # chunks; several may share a doc
        latencies.append((time.perf_counter() - start) * 1000)
        ranked = list(dict.fromkeys(h.doc_id for h in hits))[:k]
        gold = set(item["gold_doc_ids"])
        rank = next((i for i, d in enumerate(ranked, start=1) if d in gold), None)
        hits1 += rank == 1
        hits5 += rank is not None
        rr += 1 / rank if rank else 0
    n = len(items)
    q = statistics.quantiles(latencies, n=20)
    return {
        "recall@1": round(hits1 / n, 4),
        "recall@5": round(hits5 / n, 4),
        "mrr": round(rr / n, 4),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(q[18], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    args = parser.parse_args()
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-search-"))
    import_corpus(work / "corpus")
    items = [json.loads(line) for line in (work / "corpus" / "eval.jsonl").read_text().splitlines()][: args.limit]
    embedder = embedder_for(settings)
    store = ChunkStore(work / "lancedb", "chunks", embedder.dim)
    load = load_documents(work / "corpus" / "docs")
    chunks = [
        c for d in load.documents for c in chunk_document(d, embedder.counter, settings.chunk_tokens, settings.chunk_overlap)
    ]
    refresh_index(load, chunks, store, embedder)
    retriever = Retriever(store, embedder, rrf_k=settings.rrf_k)
    retriever.search("warm up", k=5)
    modes = {mode: score(retriever, items, mode) for mode in MODES}
    hybrid = modes["hybrid"]
    write_result(
        "search",
        {
            "questions": len(items),
            "documents": len(load.documents),
            "chunks": store.count(),
            "modes": modes,
            "targets": {"hybrid_recall@5": ">= vector and >= fts", "hybrid_p50_ms": "<= 50"},
            "met": {
                "recall": hybrid["recall@5"] >= max(modes["vector"]["recall@5"], modes["fts"]["recall@5"]),
                "latency": hybrid["p50_ms"] <= 50,
            },
        },
    )


if __name__ == "__main__":
    main()
