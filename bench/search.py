"""Retrieval quality and latency on the APIBench HuggingFace questions (gold = the question's API).

recall@1, recall@5 and MRR for vector-only, full-text-only and hybrid search;
p50/p95 query latency of each. Targets: hybrid >= each single mode on recall@5;
hybrid p50 <= 50 ms on 2 cores.

    python bench/search.py [--limit N]
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import import_corpus, write_result

from evaluation.metrics import percentile
from evaluation.retrieval import depth_for, ranked_documents, retrieval_scores
from ragtune.jsonl import read_jsonl
from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.indexing import refresh_index
from ragtune.knowledge.live_index import embedder_for
from ragtune.knowledge.retriever import MODES, Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings


def score(retriever: Retriever, items: list[dict], mode: str, k: int = 5) -> dict:
    rankings, latencies = [], []
    for item in items:
        start = time.perf_counter()
        hits = retriever.search(item["question"], k=depth_for(k), mode=mode)  # chunks; several may share a document
        latencies.append((time.perf_counter() - start) * 1000)
        rankings.append(ranked_documents(hits))
    scores = retrieval_scores(rankings, [item["gold_doc_ids"] for item in items], ks=(1, k))
    return {
        **{name: round(value, 4) for name, value in scores.items() if name != "questions"},
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    args = parser.parse_args()
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-search-"))
    import_corpus(work / "corpus")
    items = read_jsonl(work / "corpus" / "eval.jsonl")[: args.limit]
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
