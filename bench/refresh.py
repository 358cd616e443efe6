"""Index refresh on the 936 APIBench HuggingFace documents.

Full build, refresh after changing 1% of documents, unchanged refresh: seconds and
chunks embedded for each; pipeline chunks/s (load + chunk + embed + write + index)
against raw sentence-transformers encoding of the same chunk texts, in the same run.
Targets: incremental/full <= 0.10; unchanged embeds 0; pipeline >= 0.85 x raw.

    python bench/refresh.py
"""

import random
import tempfile
from pathlib import Path

from common import import_corpus, timer, write_result

from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.indexing import embedding_text, refresh_index
from ragtune.knowledge.live_index import embedder_for
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings


def refresh(source: Path, store: ChunkStore, embedder, settings) -> tuple[dict, float]:
    with timer() as t:
        load = load_documents(source, settings.max_file_bytes)
        chunks = [
            c for d in load.documents for c in chunk_document(d, embedder.counter, settings.chunk_tokens, settings.chunk_overlap)
        ]
        report = refresh_index(load, chunks, store, embedder, write_batch=settings.write_batch)
    return report.as_dict(), t.seconds


def main() -> None:
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-refresh-"))
    corpus = import_corpus(work / "corpus")
    source = work / "corpus" / "docs"
    embedder = embedder_for(settings)
    embedder.embed(["warm up"])
    store = ChunkStore(work / "lancedb", "chunks", embedder.dim)

    full, full_s = refresh(source, store, embedder, settings)

    # Raw encoding of exactly the chunk texts the pipeline embedded: the ceiling for throughput.
    load = load_documents(source, settings.max_file_bytes)
    texts = [
        embedding_text(c)
        for d in load.documents
        for c in chunk_document(d, embedder.counter, settings.chunk_tokens, settings.chunk_overlap)
    ]
    with timer() as raw:
        embedder.model.encode(texts, batch_size=settings.embed_batch_size, normalize_embeddings=True)

    files = sorted(source.glob("*.md"))
    changed = random.Random(0).sample(files, max(1, round(len(files) * 0.01)))
    for path in changed:
        path.write_text(
            path.read_text(encoding="utf-8") + "\n\nRevised: see the release notes for this model.\n", encoding="utf-8"
        )
    incremental, incremental_s = refresh(source, store, embedder, settings)
    unchanged, unchanged_s = refresh(source, store, embedder, settings)

    pipeline_cps = full["chunks_embedded"] / full_s
    raw_cps = len(texts) / raw.seconds
    write_result(
        "refresh",
        {
            "documents": corpus["documents"],
            "chunks": full["chunks_total"],
            "full": {"seconds": round(full_s, 2), "chunks_embedded": full["chunks_embedded"]},
            "incremental_1pct": {
                "docs_changed": len(changed),
                "seconds": round(incremental_s, 2),
                "chunks_embedded": incremental["chunks_embedded"],
            },
            "unchanged": {"seconds": round(unchanged_s, 2), "chunks_embedded": unchanged["chunks_embedded"]},
            "incremental_over_full_seconds": round(incremental_s / full_s, 4),
            "pipeline_chunks_per_s": round(pipeline_cps, 1),
            "raw_encode_chunks_per_s": round(raw_cps, 1),
            "pipeline_over_raw": round(pipeline_cps / raw_cps, 3),
            "targets": {
                "incremental_over_full_seconds": "<= 0.10",
                "unchanged_chunks_embedded": 0,
                "pipeline_over_raw": ">= 0.85",
            },
            "met": {
                "incremental": incremental_s / full_s <= 0.10,
                "unchanged": unchanged["chunks_embedded"] == 0,
                "throughput": pipeline_cps / raw_cps >= 0.85,
            },
        },
    )


if __name__ == "__main__":
    main()
