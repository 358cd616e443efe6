"""RAFT training examples drawn from the live index.

For each curated question with gold documents: the oracle chunk(s) of the gold
documents plus the k chunks the production retriever ranks highest among the
non-gold ones (hard negatives: what the model will really see beside the
answer), optionally a few random chunks. With probability P the oracle is kept
(and, for a share of those, its identifier is edited in the chunk and in the
target: a counterfactual example that teaches following the document over the
weights). Otherwise the context holds as many off-topic chunks, the nearest
beyond the question's neighbourhood (ragtune.behaviour.contexts), and the target
says the documents do not cover the question. Not the hard negatives alone: the
documents ranked just after a missing gold one are often other APIs for the
same task that answer the question too, and "not covered" there contradicts
the examples that answer from them. Documents are shuffled (`order: shuffled`, the
default), or kept in the retriever's order as served (`order: retrieval`: the
oracle where the retriever ranked it, a chunk it did not rank at a random
place), so the model can learn how much the rank says. Deterministic for a seed:
each record draws from its own generator (seed, record id), so adding records
does not change the examples already drawn.

Reference: Zhang et al., "RAFT: Adapting Language Model to Domain Specific RAG" (2024).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ragtune.behaviour.contexts import (
    NEIGHBOURHOOD,
    TRAINING,
    counterfactual_identifier,
    distinctive_identifier,
    edit_chunk,
    off_topic_context,
    replace_identifier,
)
from ragtune.behaviour.pii import residue
from ragtune.llm.prompting import NOT_COVERED, answer_json

# (question, n) -> ranked chunks [{doc_id, chunk_id, title, text}], best first
Ranker = Callable[[str, int], list[dict]]
ORDERS = ("shuffled", "retrieval")


@dataclass
class RaftConfig:
    distractors: int = 2  # hard negatives per example: with the oracle, the production k=3 documents
    random_distractors: int = 0  # extra chunks drawn at random from the index
    oracle_probability: float = 0.8  # P: share of examples whose context holds the gold chunk
    oracle_chunks: int = 1  # gold chunks per gold document (the best-ranked ones)
    candidates: int = 30  # retrieved per question to choose hard negatives from
    neighbourhood: int = NEIGHBOURHOOD  # a "not covered" context is ranked beyond the question's top documents
    counterfactual_share: float = 0.15  # of the oracle examples: identifier edited in the chunk and the target
    max_tokens: int = 1024  # prompt + answer budget (the trainer's max_length); longer documents are cut to fit
    validation_fraction: float = 0.1
    seed: int = 0
    order: str = "shuffled"  # of the documents in a context: shuffled, or retrieval (as the retriever ranked them)

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if not 0.0 <= self.counterfactual_share <= 1.0:
            raise ValueError(f"counterfactual_share must be within [0, 1], got {self.counterfactual_share}")
        if not 0.0 <= self.oracle_probability <= 1.0:
            raise ValueError(f"oracle_probability must be within [0, 1], got {self.oracle_probability}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be within [0, 1), got {self.validation_fraction}")
        if self.max_tokens < 128:
            raise ValueError(f"max_tokens must be at least 128, got {self.max_tokens}")


@dataclass
class RaftResult:
    examples: list[dict]
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    @property
    def oracle_share(self) -> float:
        return sum(e["oracle_kept"] for e in self.examples) / len(self.examples) if self.examples else 0.0


def record_rng(seed: int, record_id: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()[:16], 16))


def pick_oracles(gold_chunks: list[dict], ranked: list[dict], per_doc: int) -> list[dict]:
    """The gold chunks the retriever ranks highest, per gold document; unranked ones in document order."""
    rank = {c["chunk_id"]: i for i, c in enumerate(ranked)}
    by_doc: dict[str, list[dict]] = {}
    for chunk in gold_chunks:
        by_doc.setdefault(chunk["doc_id"], []).append(chunk)
    oracles = []
    for chunks in by_doc.values():
        chunks = sorted(chunks, key=lambda c: (rank.get(c["chunk_id"], len(ranked)), c.get("position", 0)))
        oracles.extend(chunks[:per_doc])
    return oracles


def in_retrieval_order(documents: list[dict], ranked: list[dict], rng: random.Random) -> list[dict]:
    """The documents as the retriever would serve them: those in its top len(documents) in its order, any other
    (an oracle it ranked lower or missed, a random extra) at a random place, since it would not be served at all."""
    rank = {c["chunk_id"]: i for i, c in enumerate(ranked[: len(documents)])}
    ordered = sorted((c for c in documents if c["chunk_id"] in rank), key=lambda c: rank[c["chunk_id"]])
    for chunk in (c for c in documents if c["chunk_id"] not in rank):
        ordered.insert(rng.randint(0, len(ordered)), chunk)
    return ordered


def counterfactual(record: dict, oracles: list[dict]) -> tuple[list[dict], str] | None:
    """(oracles, answer) with the answer's distinctive identifier edited in both; None when nothing to edit."""
    answer = record["answer"]
    original = distinctive_identifier(record.get("identifier") or answer)
    edited = counterfactual_identifier(record.get("identifier") or answer, TRAINING)
    target = replace_identifier(answer, original, edited) if edited else answer
    changed = [edit_chunk(c, original, edited) for c in oracles] if edited else []
    if target == answer or not any(changed):
        return None
    return [e or c for e, c in zip(changed, oracles)], target


def sample_example(
    record: dict, gold_chunks: list[dict], ranked: list[dict], pool: list[dict], config: RaftConfig, rank: Ranker
) -> dict | None:
    """One RAFT example for a curated record (see the module docstring); None when the ranking holds no
    off-topic context for a "not covered" example (a corpus of a few documents)."""
    rng = record_rng(config.seed, record["id"])
    gold = set(record["gold_doc_ids"])
    hard = [c for c in ranked if c["doc_id"] not in gold][: config.distractors]
    chosen = {c["chunk_id"] for c in hard}
    spare = [c for c in pool if c["doc_id"] not in gold and c["chunk_id"] not in chosen]
    extra = rng.sample(spare, min(config.random_distractors, len(spare)))
    keep_oracle = rng.random() < config.oracle_probability
    edit = keep_oracle and rng.random() < config.counterfactual_share
    answer = record["answer"]
    if keep_oracle:
        oracles = pick_oracles(gold_chunks, ranked, config.oracle_chunks)
        edited = counterfactual(record, oracles) if edit else None
        if edited:
            oracles, answer = edited
        distractors = hard + extra
        documents = distractors + oracles
    else:
        edited = None
        distractors = off_topic_context(rank, record["question"], gold, config.neighbourhood, len(hard) + len(extra) + 1)
        if not distractors:
            return None
        documents = list(distractors)
    if config.order == "retrieval":
        documents = in_retrieval_order(documents, ranked, rng)
    else:
        rng.shuffle(documents)
    documents = [{k: c[k] for k in ("doc_id", "chunk_id", "title", "text")} for c in documents]
    if keep_oracle:
        target = answer_json(answer, [d for d in record["gold_doc_ids"] if d in {c["doc_id"] for c in gold_chunks}])
    else:
        target = answer_json(NOT_COVERED, [])
    return {
        "id": record["id"],
        "user": record["user"],
        "question": record["question"],
        "documents": documents,
        "oracle_kept": keep_oracle,
        "counterfactual": bool(edited),
        "gold_doc_ids": record["gold_doc_ids"],
        "distractor_doc_ids": [c["doc_id"] for c in distractors],
        "target": target,
    }


def build_raft_examples(
    records: list[dict], rank: Ranker, chunks_by_doc: dict[str, list[dict]], config: RaftConfig
) -> RaftResult:
    """Examples for every curated record that has gold documents present in the index."""
    result = RaftResult(examples=[])
    pool = [c for chunks in chunks_by_doc.values() for c in chunks] if config.random_distractors else []
    for record in records:
        if not record.get("gold_doc_ids"):
            result.skipped["no_gold_documents"] += 1
            continue
        # curation already scrubbed and re-checked these; the independent patterns catch what else got in
        if residue(record["question"], recognizers_too=False) or residue(record.get("answer") or "", recognizers_too=False):
            result.skipped["pii_residue"] += 1
            continue
        gold_chunks = [c for d in record["gold_doc_ids"] for c in chunks_by_doc.get(d, [])]
        if not gold_chunks:
            result.skipped["gold_not_in_index"] += 1
            continue
        depth = max(config.candidates, 4 * (config.neighbourhood + config.distractors + config.random_distractors + 1))
        example = sample_example(record, gold_chunks, rank(record["question"], depth), pool, config, rank)
        if example is None:
            result.skipped["no_off_topic_context"] += 1
            continue
        result.examples.append(example)
    return result


def trim_lengths(lengths: list[int], excess: int) -> list[int]:
    """New lengths that remove at least `excess` tokens, cutting the longest documents first.

    Water-filling: every document longer than a cap is cut to the cap, the smallest cap that
    removes enough; short documents (usually the ones that fit whole) are left alone.
    """
    if excess <= 0:
        return list(lengths)
    for cap in range(max(lengths), -1, -1):
        if sum(max(0, n - cap) for n in lengths) >= excess:
            return [min(n, cap) for n in lengths]
    return [0] * len(lengths)


def split_examples(examples: list[dict], validation_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Stable split by a hash of the record id, so a record stays on its side as data grows."""
    train, validation = [], []
    for example in examples:
        u = int(hashlib.sha256(f"split:{seed}:{example['id']}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (validation if u < validation_fraction else train).append(example)
    if not train and validation:  # tiny sets: never leave training empty
        train.append(validation.pop())
    return train, validation


def dataset_hash(train: list[dict], validation: list[dict], config: RaftConfig) -> str:
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for split in (train, validation):
        for example in split:
            digest.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]
