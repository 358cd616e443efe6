"""How related a context is to its question, and the floor below which the documents do not cover it.

    floor = calibrate([relevance(embedder, q, search(q)) for q in answered_questions], 0.05, embedder.fingerprint)
    if below(floor.value, relevance(embedder, question, hits)): reply NOT_COVERED, no generation

A context's relevance is the best cosine similarity between the question and one of its chunks, as the index
embeds them (`passage_text`): the similarity the vector search already reports, computed here for the chunks
it did not (found by full-text search alone, or built by hand).

The floor is a low quantile of the relevance that in-scope questions get from the index: the curated questions
the adapter trains on, all answered from the documents. At the 0.05 quantile about one in-scope question in
twenty falls below it and is wrongly declined; a question less related to the corpus than that is declined
without asking the model. It catches a context with nothing near the question, not one near it that still
does not answer (another API for the same task): that call is the model's (docs/retraining.md). A floor is
tied to the embedder it was measured with: under another one it does not apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.indexing import passage_text

DROPPED_TAG = "relevance_floor_dropped"  # on a version whose floor failed `transfers`: the reason; never applied
# the share of in-scope held-out questions a floor may be shown to decline and still be served: the false
# abstention target of issue 13 (bench/quality.py), set before any split was measured against it
DECLINE_TOLERANCE = 0.10
MIN_QUESTIONS = 20  # fewer in-scope questions than this give no floor: at 0.05 of 20, one question is below it


@dataclass(frozen=True)
class RelevanceFloor:
    value: float  # decline below this relevance
    quantile: float  # share of the calibration questions below it
    questions: int  # in-scope questions it was measured on
    embedder: str  # Embedder.fingerprint it was measured with

    def as_dict(self) -> dict:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """As registry version tags (strings)."""
        return {f"relevance_floor_{k}": str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> RelevanceFloor | None:
        """The floor a registry version was tagged with, or None (none measured, or a version older than floors)."""
        try:
            return cls(
                value=float(tags["relevance_floor_value"]),
                quantile=float(tags["relevance_floor_quantile"]),
                questions=int(tags["relevance_floor_questions"]),
                embedder=tags["relevance_floor_embedder"],
            )
        except (KeyError, ValueError):
            return None


def tagged_floor(tags: dict[str, str], enabled: bool) -> RelevanceFloor | None:
    """The floor a registry version carries, unless floors are off or it was dropped (it did not transfer)."""
    return RelevanceFloor.from_tags(tags) if enabled and not tags.get(DROPPED_TAG) else None


def served_floor(tags: dict[str, str], enabled: bool, embedder: str) -> RelevanceFloor | None:
    """The floor a registry version is served with: the one tagged on it (`tagged_floor`), when it was measured
    with the embedder that serves (`embedder`, a fingerprint); else None."""
    floor = tagged_floor(tags, enabled)
    return floor if floor is not None and floor.embedder == embedder else None


def transfers(floor: RelevanceFloor, low: float | None) -> bool:
    """Whether the floor holds on held-out in-scope questions well enough to serve. `low` is the lower bound of
    a 95% interval on the share of held-out questions (each with a gold document served) it declines; when even
    that is above DECLINE_TOLERANCE (or the floor's quantile, if higher), it does not transfer (questions phrased
    unlike the training ones, another user group) and is not applied. None: nothing to tell.

    Not the quantile alone: held-out items come a few per document, so a share a little above the quantile is
    within what one corpus's documents give (APIBench HuggingFace: 5 of 42, lower bound 0.052 against 0.05),
    and the gate already weighs those declines as false abstention against the incumbent."""
    return low is None or low <= max(floor.quantile, DECLINE_TOLERANCE)


def relevance(embedder: Embedder, question: str, chunks: list[dict]) -> float | None:
    """The best cosine similarity between `question` and a chunk ({title, text, similarity?}); None without chunks.

    A chunk's `similarity`, where the vector search set it, is used as is (the same cosine over the same
    embedding); the others are embedded here.
    """
    if not chunks:
        return None
    known = [c["similarity"] for c in chunks if c.get("similarity") is not None]
    missing = [c for c in chunks if c.get("similarity") is None]
    if missing:
        vectors = embedder.embed([question] + [passage_text(c.get("title") or "", c["text"]) for c in missing])
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        known.extend(float(v) for v in vectors[1:] @ vectors[0])
    return max(known)


def calibrate(values: list[float | None], quantile: float, embedder: str) -> RelevanceFloor | None:
    """A floor with at most `quantile` of the in-scope questions' relevance strictly below it (the value at
    index int(quantile * n) of the sorted ones); None when the quantile is 0 (floors off) or fewer than
    MIN_QUESTIONS questions had a context."""
    measured = sorted(v for v in values if v is not None)
    if quantile <= 0 or len(measured) < MIN_QUESTIONS:
        return None
    index = min(int(quantile * len(measured)), len(measured) - 1)
    return RelevanceFloor(value=measured[index], quantile=quantile, questions=len(measured), embedder=embedder)


def below(floor: float | None, value: float | None) -> bool:
    """True when a context this related should be declined: a floor is set and the relevance is under it."""
    return floor is not None and value is not None and value < floor
