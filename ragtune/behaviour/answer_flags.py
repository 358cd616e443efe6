"""What a logged answer shows at a glance: its flags, read from the interaction record alone.

One definition, used by the review queue (ragtune/serving/pages.py), the live report
(evaluation/live_report.py) and the challenger's live-traffic table (evaluation/live_traffic.py).

- a **fallback**: the logged flag, or the generator's fallback text (records logged before the flag);
- **not covered**: the caller was told the documents do not answer (`ragtune.llm.prompting.abstained`),
  by the model or by the relevance floor;
- **below floor**: serving declined without asking the model, the context being less related to the
  question than the champion's relevance floor (ragtune.knowledge.relevance);
- **abstained**: the model's own "not covered"; unknown (None) below the floor, where it was not asked;
- a **valid citation**: at least one document cited, and every cited document was in the context;
  unknown (None) for a record logged before the context was kept, and below the floor (the model was
  not asked), so it counts in no denominator. A new floor thus moves neither rate the live report
  compares between champions: it shows in `below_floor` and `not_covered` only;
- the **top similarity**: the best context chunk's cosine similarity to the question (None if not logged),
  and **low retrieval** when it is below a threshold or nothing was retrieved (never for an unknown context);
- **up** / **down**: what end users said (`user_feedback`); a reviewer's verdict is not a user's vote;
- two answers to one question **agree** when they make the same call (answer or abstain) and cite the
  same documents: the behaviour the adapter is trained for, not the wording, which varies freely.
"""

from __future__ import annotations

from ragtune.llm.generator import FALLBACK_PREFIX
from ragtune.llm.prompting import abstained


def top_similarity(record: dict) -> float | None:
    values = [c["similarity"] for c in record.get("retrieved") or [] if c.get("similarity") is not None]
    return max(values) if values else None


def low_retrieval(record: dict, threshold: float) -> bool:
    """Nothing was retrieved, or the best chunk's similarity is below `threshold` (RAGTUNE_REVIEW_LOW_SIMILARITY)."""
    if record.get("retrieved") is None:
        return False
    top = top_similarity(record)
    return not record["retrieved"] or (top is not None and top < threshold)


def is_fallback(record: dict) -> bool:
    return bool(record.get("fallback")) or (record.get("answer") or "").startswith(FALLBACK_PREFIX)


def cited(record: dict) -> set[str]:
    return {c["doc_id"] for c in record.get("citations") or []}


def valid_citation(record: dict) -> bool | None:
    if record.get("retrieved") is None:
        return None
    return bool(cited(record)) and cited(record) <= {c["doc_id"] for c in record["retrieved"]}


def agree(first: dict, second: dict) -> bool:
    answer_a, answer_b = first.get("answer") or "", second.get("answer") or ""
    return abstained(answer_a) == abstained(answer_b) and cited(first) == cited(second)


def flags(record: dict) -> dict[str, bool | None]:
    """The 0/1 outcomes the live rates count, for one answer (None: unknown for this record)."""
    votes = record.get("user_feedback", record.get("feedback"))  # records built by hand may carry feedback only
    declined, not_covered = bool(record.get("below_floor")), abstained(record.get("answer") or "")
    return {
        "up": votes == "up",
        "down": votes == "down",
        "fallback": is_fallback(record),
        "not_covered": not_covered,
        "below_floor": declined,
        "abstained": None if declined else not_covered,
        "valid_citation": None if declined else valid_citation(record),
    }
