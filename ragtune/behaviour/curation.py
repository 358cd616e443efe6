"""Curation: from the raw interaction log to records fit to train on.

    curate(records, forgotten_users, CurationPolicy()) -> Curated(records, report)

Rules, in order: forgotten users out; keep a record only when a person approved
it (feedback "up") or corrected it (the correction replaces the answer), but not
an approved reply the model failed to write as answer JSON (served as a fallback); drop
empty, too short and too long ones; scrub personal data and secrets (Presidio); quarantine a
record whose scrubbed text still trips the independent check (`pii_residue`: its id, the kinds and
a hash are reported, never its text), then remove exact and near-duplicate questions (datasketch MinHash LSH on word bigrams),
keeping the newest. Pure: no Dagster, no database.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from ragtune.behaviour.pii import residue, scrub
from ragtune.llm.generator import FALLBACK_PREFIX


@dataclass
class CurationPolicy:
    min_question_chars: int = 10
    min_answer_chars: int = 20
    max_question_chars: int = 2000
    max_answer_chars: int = 2000
    near_duplicate_threshold: float = 0.7  # estimated Jaccard similarity of question word bigrams
    minhash_permutations: int = 128
    seed: int = 0


@dataclass
class CurationReport:
    input: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    redactions: Counter = field(default_factory=Counter)  # PII kind -> count
    quarantined: list[dict] = field(default_factory=list)  # {id, kinds, sha256}: never the text

    def as_dict(self) -> dict:
        return {
            "input": self.input,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "redactions": dict(self.redactions),
            "quarantined": self.quarantined,
        }


@dataclass
class Curated:
    records: list[dict]
    report: CurationReport


def text_hash(*texts: str) -> str:
    """What a quarantine report keeps of a record's text: enough to match it, nothing to read."""
    return hashlib.sha256("\x1f".join(texts).encode()).hexdigest()


def normalise_question(text: str) -> str:
    return " ".join(re.findall(r"\w+|<\w+>", text.lower()))


def accepted_answer(record: dict) -> tuple[str | None, str]:
    """(answer to train on, why) or (None, reason to drop)."""
    correction = (record.get("correction") or "").strip()
    if correction:
        return correction, "correction"
    if record.get("feedback") == "up":
        if (record.get("answer") or "").startswith(FALLBACK_PREFIX):  # the model's unreadable reply, not an answer
            return None, "unreadable_answer"
        return record.get("answer") or "", "feedback"
    return None, "no_positive_feedback"


def length_problem(question: str, answer: str, policy: CurationPolicy) -> str | None:
    if not question.strip() or not answer.strip():
        return "empty"
    if len(question.strip()) < policy.min_question_chars or len(answer.strip()) < policy.min_answer_chars:
        return "too_short"
    if len(question) > policy.max_question_chars or len(answer) > policy.max_answer_chars:
        return "too_long"
    return None


def gold_doc_ids(record: dict) -> list[str]:
    """The documents that answer: a reviewer's named documents where there are some, else the answer's citations."""
    if record.get("gold_citations"):
        return list(dict.fromkeys(record["gold_citations"]))
    return list(dict.fromkeys(c["doc_id"] for c in record.get("citations") or [] if c.get("doc_id")))


def shingles(text: str, n: int = 2) -> set[str]:
    words = normalise_question(text).split()
    if len(words) < n:
        return set(words)
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def deduplicate(records: list[dict], policy: CurationPolicy, report: CurationReport) -> list[dict]:
    """Keep the newest of each group of exact or near-duplicate questions."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=policy.near_duplicate_threshold, num_perm=policy.minhash_permutations)
    seen_exact: set[str] = set()
    kept = []
    for i, record in enumerate(sorted(records, key=lambda r: r["ts"], reverse=True)):
        key = normalise_question(record["question"])
        if key in seen_exact:
            report.dropped["duplicate"] += 1
            continue
        minhash = MinHash(num_perm=policy.minhash_permutations, seed=policy.seed)
        minhash.update_batch([s.encode("utf-8") for s in shingles(record["question"])])
        if lsh.query(minhash):
            report.dropped["near_duplicate"] += 1
            continue
        seen_exact.add(key)
        lsh.insert(str(i), minhash)
        kept.append(record)
    return sorted(kept, key=lambda r: r["ts"])


def curate(records: list[dict], forgotten: set[str], policy: CurationPolicy | None = None) -> Curated:
    policy = policy or CurationPolicy()
    report = CurationReport(input=len(records))
    candidates = []
    for record in records:
        if record.get("user") in forgotten:
            report.dropped["forgotten_user"] += 1
            continue
        if record.get("shadow_of"):  # the challenger's answer to a live question: never shown, never trained on
            report.dropped["shadow_answer"] += 1
            continue
        answer, why = accepted_answer(record)
        if answer is None:
            report.dropped[why] += 1
            continue
        problem = length_problem(record.get("question") or "", answer, policy)
        if problem:
            report.dropped[problem] += 1
            continue
        question, found_q = scrub(record["question"])
        answer, found_a = scrub(answer)
        report.redactions.update(found_q + found_a)
        left = sorted(set(residue(question)) | set(residue(answer)))
        if left:  # scrubbing missed something the independent check sees: out of training, kept for review
            report.dropped["pii_residue"] += 1
            report.quarantined.append({"id": record["id"], "kinds": left, "sha256": text_hash(question, answer)})
            continue
        candidates.append(
            {
                "id": record["id"],
                "ts": record["ts"],
                "user": record["user"],
                "question": question,
                "answer": answer,
                "gold_doc_ids": gold_doc_ids(record),
                "source": why,
            }
        )
    kept = deduplicate(candidates, policy, report)
    report.kept = len(kept)
    return Curated(records=kept, report=report)


def policy_dict(policy: CurationPolicy) -> dict:
    return asdict(policy)
