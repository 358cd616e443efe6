"""Metrics on hand-checked fixtures (the gate and its intervals are in test_gate.py)."""

import math

import pytest

from evaluation.metrics import (
    abstained,
    adheres,
    citation_accuracy,
    distinctive_identifier,
    exact_match,
    format_valid,
    identifier_match,
    identifier_shown,
    normalise,
    percentile,
    token_f1,
)
from evaluation.retrieval import depth_for, ranked_documents, recall_at_k, reciprocal_rank, retrieval_scores
from ragtune.llm.prompting import NOT_COVERED


def test_normalisation_exact_match_and_f1():
    assert normalise("The  Model, is GREAT!") == "model is great"
    assert exact_match("the answer.", "Answer") == 1.0 and exact_match("answer one", "answer") == 0.0
    # pred tokens: use bert base; ref tokens: use bert large: common {use, bert} -> P = R = 2/3
    assert token_f1("use bert base", "use bert large") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a b", "c d") == 0.0


@pytest.mark.parametrize(
    "identifier, wanted",
    [
        ("pipeline('audio-classification', model='superb/wav2vec2-base-superb-ks')", "superb/wav2vec2-base-superb-ks"),
        ('AutoModel.from_pretrained("rasa/LaBSE")', "rasa/LaBSE"),
        ("joblib.load('model.joblib')", "model.joblib"),
        ("hub.load()", "hub.load()"),
        # a free-text reference: the call's quoted string, not a longer one quoted in the explanation after it
        ("Use joblib.load('model.joblib'). Load the model using 'joblib.load()' and predict.", "model.joblib"),
    ],
)
def test_distinctive_identifier(identifier, wanted):
    assert distinctive_identifier(identifier) == wanted


def test_identifier_match_is_case_insensitive_substring():
    call = "AutoModel.from_pretrained('rasa/LaBSE')"
    assert identifier_match("Load RASA/labse with AutoModel.", call) == 1.0
    assert identifier_match("Load sentence-transformers/LaBSE.", call) == 0.0


def test_naming_every_served_document_is_not_naming_the_right_one():
    call, others = "pipeline('ner', model='org/x-large')", ["org/x", "acme/tagger"]
    assert identifier_match("Use org/x-large.", call, others) == 1.0  # "org/x" inside the right id is not another
    assert identifier_match("Use org/x-large, or acme/tagger.", call, others) == 0.0  # hedged across documents
    assert identifier_match("Use org/x-large or org/x.", call, others) == 0.0
    # a longer id that starts with the right one is another model, served or not
    assert identifier_match("Use org/x-large-v2.", call, others) == 0.0
    assert identifier_match("Use org/x-large-v2.", call, ["org/x-large-v2"]) == 0.0
    assert identifier_match("Use flan-t5-base.", "pipeline(model='flan-t5-base')", ["t5-base"]) == 1.0


def test_format_citations_abstention_adherence():
    assert format_valid('{"answer": "x", "citations": ["d1"]}') == 1.0
    for bad in ('{"answer": 3, "citations": []}', '{"answer": "x"}', "Use model x.", '{"answer": "x", "citations": [1]}'):
        assert format_valid(bad) == 0.0
    assert citation_accuracy(["d1"], ["d1", "d2"], ["d1"]) == 1.0
    assert citation_accuracy(["d3"], ["d1", "d2"], ["d3"]) == 0.0  # cited something never retrieved
    assert citation_accuracy(["d2"], ["d1", "d2"], ["d1"]) == 0.0  # retrieved but not gold
    assert citation_accuracy([], ["d1"], ["d1"]) == 0.0
    # citing the whole context is not citing the answer's source, though the gold document is among them
    assert citation_accuracy(["d1", "d2"], ["d1", "d2"], ["d1"]) == 0.0
    assert citation_accuracy(["d1", "d2"], ["d1", "d2", "d3"], ["d1", "d2"]) == 1.0  # two gold documents, both cited
    assert abstained(NOT_COVERED) and abstained("The documents do not cover this question.")
    assert abstained("Sorry, the document does not mention it")
    assert not abstained("Use pipeline('ner').")
    assert adheres("Use org/new-model.", "org/new-model", "org/old-model") == 1.0
    assert adheres("Use org/old-model.", "org/new-model", "org/old-model") == 0.0


def test_retrieval_metrics_and_percentiles():
    ranked = ["a", "b", "c"]
    assert recall_at_k(ranked, ["c"], 2) == 0.0 and recall_at_k(ranked, ["c"], 3) == 1.0
    assert reciprocal_rank(ranked, ["b", "c"]) == 0.5 and reciprocal_rank(ranked, ["z"]) == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([10], 95) == 10 and math.isnan(percentile([], 50))
    assert percentile(list(range(101)), 95) == 95


def test_recall_counts_documents_not_chunks():
    # five chunks, three of them from one document: the gold document is the second *document*
    hits = [{"doc_id": "a"}, {"doc_id": "a"}, {"doc_id": "a"}, {"doc_id": "gold"}, {"doc_id": "b"}]
    ranked = ranked_documents(hits)
    assert ranked == ["a", "gold", "b"] and ranked_documents(["x", "x", "y"]) == ["x", "y"]
    assert recall_at_k(ranked, ["gold"], 2) == 1.0 and recall_at_k(ranked, ["gold"], 1) == 0.0
    scores = retrieval_scores([ranked, ["c"]], [["gold"], ["gold"]], ks=(1, 2))
    assert scores == {"recall@1": 0.0, "recall@2": 0.5, "mrr": 0.25, "questions": 2}
    assert depth_for(5) == 15  # chunks retrieved to find 5 distinct documents
    with pytest.raises(ValueError, match="2 rankings for 1 gold"):
        retrieval_scores([ranked, ranked], [["gold"]])


def test_an_identifier_is_shown_only_when_naming_it_chooses_from_the_context():
    call = "joblib.load('model.joblib')"
    autotrain = [
        {"doc_id": "a/one", "title": "a/one", "text": "Load with joblib.load('model.joblib')."},
        {"doc_id": "b/two", "title": "b/two", "text": "Also joblib.load('model.joblib')."},
    ]
    other = {"doc_id": "org/y", "title": "org/y", "text": "AutoModel.from_pretrained('org/y')"}
    assert not identifier_shown(call, autotrain, ["a/one"])  # every served document holds it: no choice
    assert not identifier_shown(call, autotrain, ["a/one", "b/two"])  # also when both are gold
    assert not identifier_shown(call, autotrain[:1], ["a/one"])  # one document served: nothing to choose from
    assert identifier_shown(call, [autotrain[0], other], ["a/one"])
    # one API described in several documents (TF Hub): a non-gold copy beside the gold does not hide the choice
    url = "hub.load('https://tfhub.dev/google/universal-sentence-encoder/4')"
    copies = [
        {"doc_id": "use-1", "title": "Text embedding", "text": url},
        {"doc_id": "use-2", "title": "Embed sentences", "text": f"model = {url}"},
        {"doc_id": "mobilenet", "title": "Image classifier", "text": "hub.load('https://tfhub.dev/google/mobilenet/5')"},
    ]
    assert identifier_shown(url, copies, ["use-1"])
    assert not identifier_shown(url, copies[:2], ["use-1"])
    hub = [
        {"doc_id": "org/x", "title": "org/x", "text": "AutoModel.from_pretrained('ORG/X')"},
        {"doc_id": "org/y", "title": "org/y", "text": "see org/y"},
    ]
    assert identifier_shown("AutoModel.from_pretrained('org/x')", hub, ["org/x"])  # case-insensitive
    assert not identifier_shown("AutoModel.from_pretrained('org/z')", hub, ["org/z"])  # gold not shown
    assert not identifier_shown("AutoModel.from_pretrained('org/y')", hub, ["org/x"])  # only in a non-gold one
    # read as the prompt shows a document: its id label counts, though neither title nor text holds the id
    labelled = [{"doc_id": "org/x", "title": "", "text": "A parser."}, {"doc_id": "org/y", "title": "Y", "text": "A tagger."}]
    assert identifier_shown("pipeline(model='org/x')", labelled, ["org/x"])
    assert not identifier_shown("pipeline(model='org/x')", labelled, ["org/y"])
    assert not identifier_shown("", hub, ["org/x"])
