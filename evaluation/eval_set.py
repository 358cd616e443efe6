"""The evaluation set of a retrain: a held-out share of the user's own curated interactions.

    train_records, held_out = split_holdout(curated, fraction=0.2, seed=0)
    items, skipped = usable_items(eval_items_from_curated(held_out), doc_ids_in_index)

A challenger must be judged on the questions its own corpus can answer, never on another
corpus's. So by default the evaluation items are curated interactions held out by a hash of
their id (an interaction stays on its side as the log grows, and is never trained on), with
the approved answer as the reference and its citations as the gold documents. An approved
abstention (the answer says the documents do not cover it) becomes an unanswerable item.
An item whose gold documents are not in the live index is skipped with its reason: retrieval
could never find them, so it would measure nothing but the gap.
"""

from __future__ import annotations

import hashlib

from evaluation.metrics import abstained


def held_out(record_id: str, fraction: float, seed: int = 0) -> bool:
    """Stable membership of the held-out share, by a hash of the record id."""
    u = int(hashlib.sha256(f"holdout:{seed}:{record_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return u < fraction


def split_holdout(records: list[dict], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(records to train on, records held out for evaluation)."""
    train, evaluation = [], []
    for record in records:
        (evaluation if held_out(record["id"], fraction, seed) else train).append(record)
    return train, evaluation


def eval_items_from_curated(records: list[dict]) -> list[dict]:
    """Curated records as evaluation items (DESIGN.md format: id, question, reference_answer, gold_doc_ids, answerable)."""
    return [{"id": r["id"], "question": r["question"], "reference_answer": r["answer"],
             "gold_doc_ids": list(r.get("gold_doc_ids") or []), "answerable": not abstained(r["answer"])}
            for r in records]


def usable_items(items: list[dict], indexed_doc_ids: set[str]) -> tuple[list[dict], list[str]]:
    """(items the live index can answer, `id: reason` for each one left out)."""
    usable, skipped = [], []
    for item in items:
        if not item["answerable"]:
            usable.append(item)
        elif not item["gold_doc_ids"]:
            skipped.append(f"{item['id']}: no gold documents (the approved answer cites none)")
        elif not set(item["gold_doc_ids"]) & indexed_doc_ids:
            skipped.append(f"{item['id']}: gold documents not in the live index ({', '.join(item['gold_doc_ids'][:3])})")
        else:
            usable.append(item)
    return usable, skipped


def too_few_message(usable: int, needed: int, held_out_count: int, skipped: int, explicit: bool) -> str:
    """What to tell a user whose evaluation set cannot support a decision."""
    source = ("the evaluation set given" if explicit else
              f"the held-out share of the curated interactions ({held_out_count} held out)")
    return (f"only {usable} usable evaluation items in {source}, {skipped} skipped; the gate needs at least {needed}. "
            "Provide more approved interactions that cite the documents that answer them (`ragtune logs import`, or "
            "feedback with corrections), or an evaluation set of your corpus's questions (--eval-set FILE, "
            "RAGTUNE_EVAL_SET); RAGTUNE_EVAL_MIN_ITEMS lowers the bar at the cost of a weaker decision.")
