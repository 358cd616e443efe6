"""Contexts that test one behaviour each, built the same way for training (RAFT) and for evaluation.

- **Off-topic**: the documents the retriever ranks nearest to the question *outside* its
  neighbourhood (its top `neighbourhood` documents), meant to hold nothing that answers, so the
  right reply is "not covered". A context whose gold document retrieval merely missed is not such
  a context: in an API catalogue the documents ranked next are often other APIs for the same task,
  which answer the question too (half of APIBench HuggingFace's near misses). Beyond the top 20 that
  share falls but does not vanish (0.38 over coarse task labels; bench/near_miss.py, decision 36).
- **Counterfactual**: a gold chunk whose distinctive identifier is replaced by one the weights
  cannot know; the answer should state the edited one (it follows the document).

Pure functions over ranked chunks ({doc_id, chunk_id, title, text}, best first).
"""

from __future__ import annotations

import re

HUB_ID = r"[\w.\-]+/[\w.\-]+"
# An off-topic context lies beyond the question's top 20 documents: the default of RAFT's "not covered" examples
# and of the harness's unanswerable probes alike, so the probe tests the rule that was trained.
NEIGHBOURHOOD = 20


def off_topic(ranked: list[dict], exclude: set[str], neighbourhood: int, k: int) -> list[dict]:
    """The first chunk of each of the k best-ranked documents beyond the top `neighbourhood` ones, never one of
    `exclude` (the gold documents); exactly k, or none.

    A corpus too small to have k documents beyond the neighbourhood (a few dozen documents) gets its k
    lowest-ranked documents instead, never one of the top k that would be served: the least related it has.
    """
    firsts: dict[str, dict] = {}
    for chunk in ranked:
        firsts.setdefault(chunk["doc_id"], chunk)
    documents = list(firsts.values())  # in rank order, one chunk per document
    beyond = [c for c in documents[neighbourhood:] if c["doc_id"] not in exclude]
    if len(beyond) >= k:
        return beyond[:k]
    tail = [c for c in documents[k:] if c["doc_id"] not in exclude]
    return tail[-k:] if len(tail) >= k else []


def off_topic_context(search, question: str, exclude: set[str], neighbourhood: int, k: int) -> list[dict]:
    """`off_topic` over a ranking deep enough to hold neighbourhood + k documents: `search(question, n)` ranks
    chunks, and a document may have many, so the ranking is deepened until it holds enough documents or
    holds the whole corpus."""
    n = 4 * (neighbourhood + k)
    while True:
        ranked = search(question, n)
        if len(ranked) < n or len({c["doc_id"] for c in ranked}) >= neighbourhood + k + len(exclude):
            return off_topic(ranked, exclude, neighbourhood, k)
        n *= 4


def distinctive_identifier(identifier: str) -> str:
    """The part of a reference identifier worth matching: a quoted hub id (`org/name`), else the longest quoted
    string of its first sentence (the call; the explanation after it may quote other things), else of the
    whole text, else the identifier itself."""
    quoted = re.findall(r"['\"]([^'\"]+)['\"]", identifier)
    hub_ids = [q for q in quoted if re.fullmatch(HUB_ID, q)]
    first = re.findall(r"['\"]([^'\"]+)['\"]", re.split(r"\.\s", identifier, maxsplit=1)[0])
    first_hub = [q for q in first if re.fullmatch(HUB_ID, q)]
    if first_hub or hub_ids:
        return (first_hub or hub_ids)[0]
    return max(first or quoted, key=len) if quoted else identifier.strip()


# Two disjoint families of edits: RAFT trains on one, the harness probes with the other. An adapter that learnt
# the edit's pattern (append "-labs" to the org) rather than to read the document gains nothing on the probe.
TRAINING, PROBE = "training", "probe"
EDITS = {
    TRAINING: {"hub": "{org}-labs/{name}", "file": "{stem}_v2.{ext}", "word": "{head}_cf_{tail}"},
    PROBE: {"hub": "{org}/open-{name}", "file": "{stem}-ft.{ext}", "word": "{head}-x-{tail}"},
}


def counterfactual_identifier(identifier: str, family: str) -> str | None:
    """A plausible identifier that is not the original and does not contain it, from one family of EDITS
    (training: `org/name` -> `org-labs/name`; probe: `org/name` -> `org/open-name`)."""
    edits = EDITS[family]
    original = distinctive_identifier(identifier)
    if "/" in original and not original.startswith("/"):
        org, name = original.split("/", 1)
        edited = edits["hub"].format(org=org, name=name)
    elif re.search(r"\w\.\w+$", original):
        stem, ext = original.rsplit(".", 1)
        edited = edits["file"].format(stem=stem, ext=ext)
    elif len(original) >= 4:
        middle = len(original) // 2
        edited = edits["word"].format(head=original[:middle], tail=original[middle:])
    else:
        return None
    return edited if original not in edited else None


def replace_identifier(text: str, original: str, edited: str) -> str:
    """Every occurrence of `original` that stands alone replaced: not part of a longer identifier (`org/name-large`,
    `org/name_v3`, `xorg/name`, `org/name.bin`); a sentence's full stop after it is not part of it."""
    return re.sub(rf"(?<![\w./-]){re.escape(original)}(?![\w-]|\.\w)", lambda _: edited, text)


def edit_chunk(chunk: dict, original: str, edited: str) -> dict | None:
    """The chunk with `original` replaced by `edited` in its text and title; None when its text has no occurrence
    standing alone (the edit would change nothing the model reads)."""
    text = replace_identifier(chunk["text"], original, edited)
    if text == chunk["text"]:
        return None
    return {**chunk, "text": text, "title": replace_identifier(chunk.get("title") or "", original, edited)}
