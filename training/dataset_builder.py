"""Turn curated interactions into a RAFT dataset on disk, using the live index.

The glue between the pure sampler (`training.raft`), the production retriever
(hard negatives), the base model's chat template and the dataset folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ragtune.behaviour.datasets import save_raft
from ragtune.knowledge.relevance import RelevanceFloor, calibrate, relevance
from ragtune.knowledge.retriever import Retriever
from ragtune.knowledge.store import ChunkStore
from ragtune.llm.prompting import render_example
from training.raft import RaftConfig, build_raft_examples, dataset_hash, split_examples, trim_lengths

CHUNK_COLUMNS = ["doc_id", "chunk_id", "title", "text", "position", "public"]


@dataclass
class RaftDataset:
    folder: Path
    digest: str
    train: int
    validation: int
    oracle_share: float
    skipped: dict
    index_version: int
    trimmed: int = 0  # examples whose documents were cut to fit max_tokens
    counterfactual: int = 0  # oracle examples with the identifier edited in the document and the answer
    relevance_floor: RelevanceFloor | None = None  # measured on these training questions (ragtune.knowledge.relevance)

    def as_dict(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def chunks_by_doc(store: ChunkStore, public_only: bool) -> dict[str, list[dict]]:
    rows = store.read_columns(CHUNK_COLUMNS).to_pylist()
    grouped: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: (r["doc_id"], r["position"])):
        if row["public"] or not public_only:
            grouped.setdefault(row["doc_id"], []).append(row)
    return grouped


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_within_budget(tokenizer, example: dict, max_tokens: int) -> tuple[dict, bool] | None:
    """Prompt and completion of at most `max_tokens`, cutting the longest documents' tails if needed.

    Without this the trainer truncates from the right, and a long context silently loses
    the answer the example exists to teach. Returns (rendered, trimmed), or None when even
    empty documents would not fit.
    """
    documents, trimmed = example["documents"], False
    for _ in range(4):  # decode/encode round trips can shift a token or two
        rendered = render_example(tokenizer, example["question"], documents, example["target"])
        total = count_tokens(tokenizer, rendered["prompt"]) + count_tokens(tokenizer, rendered["completion"])
        if total <= max_tokens:
            if trimmed:
                example["documents"] = documents
            return rendered, trimmed
        ids = [tokenizer(d["text"], add_special_tokens=False)["input_ids"] for d in documents]
        if not any(ids):
            return None
        lengths = trim_lengths([len(i) for i in ids], total - max_tokens + 4)
        documents = [{**d, "text": tokenizer.decode(i[:n])} for d, i, n in zip(documents, ids, lengths)]
        trimmed = True
    return None


def build_dataset(
    records: list[dict],
    store: ChunkStore,
    retriever: Retriever,
    tokenizer,
    config: RaftConfig,
    datasets_dir: Path,
    include_restricted: bool = False,
    held_out_ids: list[str] | None = None,
    floor_quantile: float = 0.0,
    context_k: int = 3,
) -> RaftDataset:
    """Sample, render with the chat template, split, hash and save; returns where and what.

    With `floor_quantile` > 0 it also measures the relevance floor (ragtune.knowledge.relevance) on these
    questions, each with the `context_k` chunks serving would give it: they are in scope by construction,
    every one answered from the documents.
    """
    if not store.exists() or store.count() == 0:
        raise RuntimeError("the index is empty: run `ragtune refresh` before building a RAFT dataset")
    # Restricted documents stay out unless asked for: weights cannot enforce an access list.
    groups = None if include_restricted else []
    index_version = store.version()

    def rank(question: str, n: int) -> list[dict]:
        return [hit.as_dict() for hit in retriever.search(question, k=n, groups=groups)]

    by_doc = chunks_by_doc(store, public_only=not include_restricted)
    result = build_raft_examples(records, rank, by_doc, config)
    # in scope: a gold document this search can reach (a restricted one hidden from it would pull the floor down)
    in_scope = [r["question"] for r in records if any(d in by_doc for d in r.get("gold_doc_ids") or ())]
    floor = calibrate(
        [relevance(retriever.embedder, q, rank(q, context_k)) for q in in_scope] if floor_quantile > 0 else [],
        floor_quantile,
        retriever.embedder.fingerprint,
    )
    fitted, trimmed = [], 0
    for example in result.examples:
        rendered = render_within_budget(tokenizer, example, config.max_tokens)
        if rendered is None:
            result.skipped["over_max_tokens"] += 1
            continue
        example.update(rendered[0])
        trimmed += rendered[1]
        fitted.append(example)
    result.examples = fitted
    train, validation = split_examples(result.examples, config.validation_fraction, config.seed)
    digest = dataset_hash(train, validation, config)
    if store.version() != index_version:  # a refresh committed mid-build: the examples mix two index versions
        raise RuntimeError(
            f"the index changed from version {index_version} to {store.version()} while the RAFT dataset "
            "was built; run the job again"
        )
    meta = {
        "hash": digest,
        "config": asdict(config),
        "train": len(train),
        "validation": len(validation),
        "oracle_share": round(result.oracle_share, 4),
        "skipped": dict(result.skipped),
        "index_version": index_version,
        "include_restricted": include_restricted,
        "trimmed": trimmed,
        "counterfactual": sum(e["counterfactual"] for e in result.examples),
        "held_out_ids": sorted(held_out_ids or []),
        "relevance_floor": floor.as_dict() if floor else None,
    }
    folder = save_raft(datasets_dir, digest, {"train": train, "validation": validation}, meta)
    return RaftDataset(
        folder=folder,
        digest=digest,
        train=len(train),
        validation=len(validation),
        oracle_share=round(result.oracle_share, 4),
        skipped=dict(result.skipped),
        index_version=index_version,
        trimmed=trimmed,
        counterfactual=meta["counterfactual"],
        relevance_floor=floor,
    )
