"""Evaluation metrics: pure functions over one item, averaged by the harness.

Answer correctness follows SQuAD's normalisation (lower case, no punctuation,
no articles, single spaces) for exact match and token F1. Identifier match asks
whether the reference's distinctive identifier (for APIBench: the model id in
the API call) appears in the answer. Citation, format, abstention and adherence
metrics read the answer JSON of docs/design.md.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

from ragtune.behaviour.contexts import distinctive_identifier
from ragtune.llm.prompting import abstained, format_documents, parse_answer

# abstained: defined beside the answer contract (the harness and the live report share it);
# distinctive_identifier: beside the contexts built from it (RAFT training shares it)
__all__ = ["abstained", "distinctive_identifier"]


def normalise(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise(prediction) == normalise(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalise(prediction).split(), normalise(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def identifier_match(answer: str, identifier: str, others: list[str] = ()) -> float:
    """The reference's distinctive identifier is in the answer, and none of `others` (the ids of the served
    documents that do not answer) is: an answer that names every served document has not chosen one."""
    wanted = distinctive_identifier(identifier).lower()
    text = answer.lower()
    if not wanted or not names(text, wanted):
        return 0.0
    return float(not any(len(o) >= 3 and names(text, o.lower()) for o in others if o.lower() != wanted))


def names(text: str, identifier: str) -> bool:
    """`identifier` occurs in `text` as a whole id: "org/x" is not named by "org/x-large", nor "t5-base" by "flan-t5-base"."""
    return re.search(rf"(?<![\w/.-]){re.escape(identifier)}(?![\w/-])", text) is not None


def format_valid(raw_output: str) -> float:
    return float(parse_answer(raw_output) is not None)


def citation_accuracy(cited: list[str], retrieved: list[str], gold: list[str]) -> float:
    """1 when something is cited and every citation is a gold document of the retrieved context.

    Citing a wrong document beside the right one scores 0: otherwise citing the whole context would
    score 1 whenever retrieval found the gold document (the base model cites 1.8 of 3 documents on
    the demo's held-out questions, and scored 0.64 by "a gold document is among them", 0.14 by this).
    """
    if not cited:
        return 0.0
    return float(set(cited) <= (set(retrieved) & set(gold)))


def identifier_shown(identifier: str, documents: list[dict], gold: list[str]) -> bool:
    """Naming the reference's distinctive identifier shows a choice made from the context: a gold document
    there holds it and some served document does not (each read as the prompt shows it: `[doc id] title`,
    then its text).

    Other served documents may hold it too. A corpus can describe one API in several documents (TF Hub's
    model URLs recur across documents), and naming it is then right whichever of them the model read. What
    this refuses is an identifier every served document holds: APIBench's AutoTrain models all load with
    `joblib.load('model.joblib')`, so with only AutoTrain documents served, naming it picks nothing out.
    """
    wanted = distinctive_identifier(identifier).lower()
    if not wanted:
        return False
    holders = {d["doc_id"] for d in documents if wanted in format_documents([d]).lower()}
    return bool(holders & set(gold)) and any(d["doc_id"] not in holders for d in documents)


def adheres(answer: str, counterfactual: str, original: str) -> float:
    """The answer follows the (edited) document: it states the counterfactual value and not the original one."""
    text = answer.lower()
    return float(counterfactual.lower() in text and original.lower() not in text)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]), as numpy's default; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
