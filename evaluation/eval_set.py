"""The evaluation set of a retrain: a held-out share of the user's own curated interactions.

    chosen = build_evaluation_set(curated, eval_set=None, indexed=indexed_doc_ids(store), holdout=0.2)
    chosen["items"], chosen["skipped"], chosen["held_out_ids"]   # judge on, left out with why, never train on

A challenger must be judged on the questions its own corpus can answer, never on another
corpus's. So by default the evaluation items are curated interactions held out by a hash of
their gold documents (all questions about the same documents fall on one side, so a paraphrase
in training cannot stand in for reading the document at evaluation time; an interaction stays on
its side as the log grows, and is never trained on), with the approved answer as the reference
and its citations as the gold documents. An approved
abstention (the answer says the documents do not cover it) becomes an unanswerable item.
An item whose gold documents are not in the live index is skipped with its reason: retrieval
could never find them, so it would measure nothing but the gap.

Items on the same gold documents are not independent evidence: a model that has learned one
popular document answers all its questions alike. Real logs are dominated by a few documents (on
APIBench's TensorFlow Hub split, 226 of 332 held-out questions ask about one model, the universal
sentence encoder; in the bundled demo 22 of 71 ask about one AutoTrain model), and a paired interval
over items would count each of them as a new observation. So at most `per_document` items are kept
per gold-document group (the earliest in the log), and the kept items are ordered round-robin across
groups, so an item limit still covers as many documents as it can. The others stay held out from
training; they are counted as `capped`, not skipped (nothing is wrong with them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evaluation.harness import eval_set_digest, load_eval_set
from evaluation.metrics import abstained, normalise


def held_out(record_id: str, fraction: float, seed: int = 0) -> bool:
    """Stable membership of the held-out share, by a hash of the record id."""
    u = int(hashlib.sha256(f"holdout:{seed}:{record_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return u < fraction


def holdout_key(record: dict) -> str:
    """What decides a record's side: its gold documents (its id when it cites none)."""
    gold = sorted(record.get("gold_doc_ids") or [])
    return "docs:" + "|".join(gold) if gold else "id:" + record["id"]


def split_holdout(records: list[dict], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(records to train on, records held out for evaluation)."""
    train, evaluation = [], []
    for record in records:
        (evaluation if held_out(holdout_key(record), fraction, seed) else train).append(record)
    return train, evaluation


def eval_items_from_curated(records: list[dict]) -> list[dict]:
    """Curated records as evaluation items (docs/design.md format: id, question, reference_answer, gold_doc_ids, answerable)."""
    return [
        {
            "id": r["id"],
            "question": r["question"],
            "reference_answer": r["answer"],
            "gold_doc_ids": list(r.get("gold_doc_ids") or []),
            "answerable": not abstained(r["answer"]),
        }
        for r in records
    ]


def spread_over_documents(items: list[dict], per_document: int | None) -> tuple[list[dict], int]:
    """(at most `per_document` items per gold-document group, round-robin across groups; how many were left out).
    Items without gold documents (unanswerable ones) are each their own group. None or 0: no cap, order unchanged."""
    if not per_document:
        return list(items), 0
    groups: dict[str, list[dict]] = {}
    for item in items:  # the key the holdout splits by: the same documents, the same group
        groups.setdefault(holdout_key(item), []).append(item)
    kept = [g[:per_document] for g in groups.values()]
    spread = [g[i] for i in range(per_document) for g in kept if i < len(g)]
    return spread, len(items) - len(spread)


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


def indexed_doc_ids(store) -> set[str]:
    """Every document id in the live index (empty when there is no index)."""
    return set(store.read_columns(["doc_id"]).column("doc_id").to_pylist()) if store.exists() else set()


def training_records(curated: list[dict], held_out_ids, forgotten) -> list[dict]:
    """The curated records training may use: never an evaluation item's (the gate's questions), never a
    user erased after curation read the log. The adapter's RAFT data and the embedder's pairs both come from here."""
    held_out, forgotten = set(held_out_ids), set(forgotten)
    return [r for r in curated if r["user"] not in forgotten and r["id"] not in held_out]


def same_questions(records: list[dict], items: list[dict]) -> list[str]:
    """Ids of curated records asking an evaluation item's question (after normalisation): never train on them."""
    asked = {normalise(i["question"]) for i in items}
    return [r["id"] for r in records if normalise(r["question"]) in asked]


def build_evaluation_set(
    curated: list[dict],
    eval_set: str | Path | None,
    indexed: set[str],
    holdout: float,
    seed: int = 0,
    per_document: int | None = None,
) -> dict:
    """The items a challenger is judged on: an explicit set, or the held-out share of `curated`; only items the
    live index can answer (`indexed`: its doc ids), the rest listed in `skipped` with why; at most `per_document`
    items per gold-document group (the rest counted in `capped`). `held_out_ids` are the curated records training
    must leave out: the whole held-out share, or those asking an explicit item's question."""
    if eval_set:
        items, skipped = load_eval_set(Path(eval_set))
        source, held_out_ids = str(eval_set), same_questions(curated, items)
    else:
        _, held = split_holdout(curated, holdout, seed)
        items, skipped, source, held_out_ids = eval_items_from_curated(held), [], "held-out", [r["id"] for r in held]
    usable, left_out = usable_items(items, indexed)
    usable, capped = spread_over_documents(usable, per_document)
    documents = {"|".join(sorted(i["gold_doc_ids"])) for i in usable if i["answerable"]}
    return {
        "items": usable,
        "skipped": skipped + left_out,
        "source": source,
        "held_out_ids": held_out_ids,
        "capped": capped,
        "per_document": per_document or None,
        "documents": len(documents),
        "digest": eval_set_digest(usable) if usable else "",
    }


def too_few_message(
    usable: int,
    needed: int,
    held_out_count: int,
    skipped: int,
    explicit: bool,
    capped: int = 0,
    per_document: int | None = None,
    documents: int = 0,
) -> str:
    """What to tell a user whose evaluation set cannot support a decision."""
    source = (
        "the evaluation set given" if explicit else f"the held-out share of the curated interactions ({held_out_count} held out)"
    )
    spread = (
        f", {capped} more left out by the cap of {per_document} per gold document (questions on one document are not "
        f"independent evidence; these {usable} cover {documents} documents; RAGTUNE_EVAL_PER_DOCUMENT)"
        if capped
        else ""
    )
    return (
        f"only {usable} usable answerable evaluation items in {source}, {skipped} skipped{spread}; the release gate needs "
        f"at least {needed} to decide, so training now would be wasted. Provide more approved interactions that "
        "cite the documents that answer them (`ragtune logs import`, or feedback with corrections), or an "
        "evaluation set of your corpus's questions (--eval-set FILE, RAGTUNE_EVAL_SET); a gate policy with a "
        "lower min_items (--gate FILE) decides on less evidence."
    )
