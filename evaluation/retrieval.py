"""Retrieval metrics: one definition for the harness, the demo and the benchmarks.

    ranked = ranked_documents(retriever.search(question, k=depth))   # chunks -> document ids, best first
    recall_at_k(ranked, gold, 5), reciprocal_rank(ranked, gold)
    retrieval_scores([ranked, ...], [gold, ...], ks=(1, 5))          # means over items

recall@k counts *documents*, not chunks: the retriever returns chunks, several of one document may
rank high, so the ranking is first reduced to distinct documents in rank order (a document takes the
rank of its best chunk), and an item is a hit when one of its gold documents is among the first k of
those. MRR is the mean over items of 1/rank of the first gold document in that list (0 when none is).
Retrieve more chunks than k (`depth_for(k)`), or fewer than k distinct documents may be left.
"""

from __future__ import annotations

from collections.abc import Iterable

CHUNKS_PER_DOCUMENT = 3  # chunks retrieved per document wanted: enough for k distinct documents in practice


def depth_for(k: int) -> int:
    """Chunks to retrieve so that the first k distinct documents can be scored."""
    return k * CHUNKS_PER_DOCUMENT


def ranked_documents(hits: Iterable) -> list[str]:
    """Distinct document ids in rank order, from hits (objects or dicts with a doc_id) or plain ids."""
    ids = (h if isinstance(h, str) else h["doc_id"] if isinstance(h, dict) else h.doc_id for h in hits)
    return list(dict.fromkeys(ids))


def recall_at_k(ranked_doc_ids: list[str], gold: list[str], k: int) -> float:
    """1 when a gold document is among the first k distinct documents."""
    return float(bool(set(ranked_doc_ids[:k]) & set(gold)))


def reciprocal_rank(ranked_doc_ids: list[str], gold: list[str]) -> float:
    """1/rank of the first gold document among the ranked documents; 0 when none is there."""
    for rank, doc_id in enumerate(ranked_doc_ids, start=1):
        if doc_id in gold:
            return 1.0 / rank
    return 0.0


def retrieval_scores(rankings: list[list[str]], golds: list[list[str]], ks: Iterable[int] = (1, 5)) -> dict:
    """recall@k for each k and MRR, averaged over items (each ranking already reduced to documents)."""
    n = len(rankings)
    if n != len(golds):
        raise ValueError(f"{n} rankings for {len(golds)} gold lists")
    scores = {f"recall@{k}": sum(recall_at_k(r, g, k) for r, g in zip(rankings, golds)) / max(n, 1) for k in ks}
    scores["mrr"] = sum(reciprocal_rank(r, g) for r, g in zip(rankings, golds)) / max(n, 1)
    return {**scores, "questions": n}
