"""Does fine-tuning the embedder on the loop's questions improve retrieval of documents it never trained on?

The APIBench split goes through the project's importer (every question an approved interaction citing
its API's document) and indexer. The questions are split by gold document as `ragtune retrain` splits
them (evaluation/eval_set.py: held-out documents are never trained on, at most 3 items per document);
the embedder is fine-tuned on the rest with the live hybrid retriever's hard negatives
(training/embedder.py), a green table is filled with it (knowledge/blue_green.py), and both retrievers
answer the held-out questions. Reported: recall@5 and MRR (hybrid, as served, and vector alone) with
paired 95% intervals, and the embedder gate's verdict. Targets (issue 15): HuggingFace held-out recall@5
>= 0.60; TensorFlow Hub +0.15 over the base embedder.

    python bench/embedder.py --split huggingface [--holdout 0.3] [--minutes 10] [--epochs 1]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import APIBENCH, SPLITS, write_result

from evaluation.embedder_gate import EmbedderGatePolicy, compare_retrieval, decide_retrieval, retrieval_rows
from evaluation.eval_set import split_holdout, spread_over_documents
from ragtune.cli.apibench import import_apibench
from ragtune.jsonl import read_jsonl
from ragtune.knowledge.blue_green import sync_rows
from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.indexing import refresh_index
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import load_settings
from training.dataset_builder import chunks_by_doc
from training.embedder import EmbedderTrainingConfig, embedder_pairs, train_embedder

TARGETS = {"huggingface": {"recall@5": ">= 0.60"}, "tensorflow": {"recall@5 gain": ">= +0.15"}}


def items_of(interactions: list[dict]) -> list[dict]:
    return [
        {"id": r["id"], "question": r["question"], "gold_doc_ids": [c["doc_id"] for c in r["citations"]], "answerable": True}
        for r in interactions
        if r.get("citations")
    ]


def searcher(retriever: Retriever, mode: str):
    return lambda question, n: retriever.search(question, k=n, mode=mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=sorted(SPLITS), default="huggingface")
    parser.add_argument("--holdout", type=float, default=0.3, help="share of gold documents held out (default 0.3)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget (default 10)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", help="training precision (float32; bfloat16 where the CPU has bf16 units)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-embedder-"))
    os.environ["RAGTUNE_HOME"] = str(home)
    settings = load_settings()
    api, questions = SPLITS[args.split]
    import_apibench(APIBENCH / api, APIBENCH / questions, home / "data", eval_fraction=0.0, seed=0)
    items = items_of(read_jsonl(home / "data" / "interactions.jsonl"))
    base = Embedder(settings.embedder_path(), dtype="float32")
    load = load_documents(home / "data" / "docs")
    chunks = [c for d in load.documents for c in chunk_document(d, base.counter, settings.chunk_tokens, settings.chunk_overlap)]
    store = ChunkStore(settings.lancedb_uri, "chunks", base.dim)
    started = time.perf_counter()
    refresh_index(load, chunks, store, base)
    index_seconds = time.perf_counter() - started

    train, held = split_holdout(items, args.holdout)
    held, capped = spread_over_documents(held, settings.eval_per_document)
    live = Retriever(store, base, settings.rrf_k)
    pairs = embedder_pairs(train, lambda q, n: [h.as_dict() for h in live.search(q, k=n)], chunks_by_doc(store, True))
    config = EmbedderTrainingConfig(epochs=args.epochs, batch_size=args.batch_size, max_minutes=args.minutes)
    trained = train_embedder(base.model_path, pairs, home / "tuned", config, args.dtype)
    tuned = Embedder(str(home / "tuned"), dtype="float32")
    green = ChunkStore(settings.lancedb_uri, "green", tuned.dim)
    started = time.perf_counter()
    sync_rows(store, green, tuned)
    green.ensure_indexes(settings.vector_index_min_rows)
    green_seconds = time.perf_counter() - started
    fine_tuned = Retriever(green, tuned, settings.rrf_k)

    comparisons = {
        mode: compare_retrieval(retrieval_rows(searcher(fine_tuned, mode), held), retrieval_rows(searcher(live, mode), held))
        for mode in ("hybrid", "vector")
    }
    modes = {
        mode: {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()} for name, m in c["metrics"].items()}
        for mode, c in comparisons.items()
    }
    verdict = decide_retrieval(comparisons["hybrid"], EmbedderGatePolicy())  # the gate judges the search users get
    hybrid = modes["hybrid"]["recall@5"]
    met = {"recall@5": hybrid["challenger"] >= 0.60} if args.split == "huggingface" else {"recall@5 gain": hybrid["diff"] >= 0.15}
    write_result(
        f"embedder-{args.split}",
        {
            "split": args.split,
            "documents": len(load.documents),
            "chunks": store.count(),
            "questions": len(items),
            "train_questions": len(train),
            "held_out_items": len(held),
            "held_out_gold_documents": len({tuple(i["gold_doc_ids"]) for i in held}),
            "capped_per_document": capped,
            "training": {k: v for k, v in trained.items() if not k.startswith("config/")} | {"config": vars(args)},
            "index_seconds": round(index_seconds, 1),
            "green_seconds": round(green_seconds, 1),
            "modes": modes,
            "gate": verdict.as_dict(),
            "targets": TARGETS[args.split],
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
