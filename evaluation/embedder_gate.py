"""The embedder's release gate: does the fine-tuned embedder retrieve the gold documents better?

    rows = {name: retrieval_rows(search, items) for name, search in (("live", live), ("challenger", green))}
    comparison = compare_retrieval(rows["challenger"], rows["live"])
    verdict = decide_retrieval(comparison, EmbedderGatePolicy())

The same rules as the adapter's gate (evaluation/gate.py), on retrieval metrics: each held-out item is
searched with the live retriever and with the challenger's (its own embedder over its own green table,
the hybrid search users get), recall@k and reciprocal rank are scored per item, and the challenger
passes only when the 95% paired interval of its recall@k gain clears `min_improvement`, MRR is not shown
worse beyond `tolerance`, and at least `min_items` items were compared. Two copies of one embedder tie
on every item, so their interval straddles zero: never promoted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from evaluation.gate import Verdict, guard_rule, primary_rule, verdict_of
from evaluation.intervals import METHOD, paired_difference
from evaluation.retrieval import depth_for, ranked_documents, recall_at_k, reciprocal_rank

Search = Callable[[str, int], list]  # (question, n) -> hits, best first


@dataclass
class EmbedderGatePolicy:
    k: int = 5
    min_improvement: float = 0.0  # the recall@k gain's 95% lower bound must exceed this: shown better
    tolerance: float = 0.02  # MRR may not be shown worse by more than this
    guards: list[str] = field(default_factory=lambda: ["mrr"])
    min_items: int = 50

    @property
    def primary_metric(self) -> str:
        return f"recall@{self.k}"

    def as_dict(self) -> dict:
        return asdict(self)


def retrieval_rows(search: Search, items: list[dict], k: int = 5) -> list[dict]:
    """Per answerable item: recall@k and reciprocal rank of its gold documents."""
    rows = []
    for item in items:
        if not item.get("answerable", True) or not item.get("gold_doc_ids"):
            continue
        ranked = ranked_documents(search(item["question"], depth_for(k)))
        gold = list(item["gold_doc_ids"])
        rows.append({"item_id": item["id"], f"recall@{k}": recall_at_k(ranked, gold, k), "mrr": reciprocal_rank(ranked, gold)})
    return rows


def compare_retrieval(challenger: list[dict], incumbent: list[dict], k: int = 5) -> dict:
    """Per metric: both means, the paired difference and its 95% interval, over the items both were scored on."""
    compared = {}
    for metric in (f"recall@{k}", "mrr"):
        difference = paired_difference(
            {r["item_id"]: r[metric] for r in challenger if metric in r},
            {r["item_id"]: r[metric] for r in incumbent if metric in r},
        )
        if difference is not None:
            compared[metric] = difference.as_dict()
    n = max((m["n"] for m in compared.values()), default=0)
    return {"method": METHOD, "items": n, "metrics": compared}


def decide_retrieval(comparison: dict, policy: EmbedderGatePolicy) -> Verdict:
    measured = comparison.get("metrics") or {}
    primary = measured.get(policy.primary_metric)
    rules = [primary_rule(policy.primary_metric, primary, policy)]
    rules += [guard_rule(metric, measured.get(metric), policy) for metric in policy.guards]
    n = comparison.get("items", 0)
    enough = n >= policy.min_items
    rules.append(
        ("passed" if enough else "not_enough_evidence", f"evidence: {n} held-out items compared (needs {policy.min_items})")
    )
    return verdict_of(rules, enough, policy.primary_metric, primary)
