"""The evaluation harness: probes, scoring and caching on hand-checked fixtures.

The real model runs through the harness in test_release.py; here a scripted
answerer stands in for it so each metric's bookkeeping can be checked exactly.
"""

import json

import pytest

from evaluation.harness import (
    Candidate,
    HarnessConfig,
    answer_metrics,
    build_probes,
    item_metrics,
    load_eval_set,
    run_harness,
    summarise,
)
from ragtune.behaviour.contexts import PROBE, TRAINING, counterfactual_identifier, edit_chunk, off_topic, off_topic_context
from ragtune.llm.generator import Generation, to_answer
from ragtune.llm.prompting import NOT_COVERED, answer_json

CHUNKS = {
    "acme/parser": "# acme/parser\n\nParses things.\n\n## API call\n\n`pipeline('parse', model='acme/parser')`",
    "acme/tagger": "# acme/tagger\n\nTags things.\n\n## API call\n\n`pipeline('tag', model='acme/tagger')`",
    "other/embedder": "# other/embedder\n\nEmbeds.\n\n## API call\n\n`SentenceTransformer('other/embedder')`",
    "misc/joblib": "# misc/joblib\n\nA tabular model.\n\n## API call\n\n`joblib.load('model.joblib')`",
}
ITEMS = [
    {
        "id": "q1",
        "question": "parse my text",
        "reference_answer": "Use pipeline('parse', model='acme/parser').",
        "gold_doc_ids": ["acme/parser"],
        "answerable": True,
        "identifier": "pipeline('parse', model='acme/parser')",
    },
    {
        "id": "q2",
        "question": "tag my text",
        "reference_answer": "Use pipeline('tag', model='acme/tagger').",
        "gold_doc_ids": ["acme/tagger"],
        "answerable": True,
        "identifier": "pipeline('tag', model='acme/tagger')",
    },
    {"id": "q3", "question": "what is the weather", "reference_answer": NOT_COVERED, "gold_doc_ids": [], "answerable": False},
]
# q1's gold is ranked first, q2's gold second, q3 has none
RANKINGS = {
    "parse my text": ["acme/parser", "acme/tagger", "other/embedder", "misc/joblib"],
    "tag my text": ["other/embedder", "acme/tagger", "acme/parser", "misc/joblib"],
    "what is the weather": ["misc/joblib", "other/embedder", "acme/parser", "acme/tagger"],
}


def search(question: str, n: int) -> list[dict]:
    return [{"doc_id": d, "chunk_id": f"{d}#0", "title": d, "text": CHUNKS[d]} for d in RANKINGS[question][:n]]


class Scripted:
    """Answers from a table keyed by (question, first document id); counts its calls."""

    def __init__(self, replies: dict):
        self.replies, self.calls = replies, 0

    def generate(self, question: str, documents: list[dict]) -> Generation:
        self.calls += 1
        raw = self.replies(question, documents) if callable(self.replies) else self.replies[question]
        answer, citations, valid = to_answer(raw)
        return Generation(answer=answer, citations=citations, valid=valid, raw=raw, tokens=len(raw.split()), seconds=0.01)

    def generate_batch(self, requests: list[tuple[str, list[dict]]], progress=None) -> list[Generation]:
        answers = [self.generate(question, documents) for question, documents in requests]
        if progress is not None:
            progress(len(answers))
        return answers


def faithful(question: str, documents: list[dict]) -> str:
    """What a perfect adapter does: copy the API call of a document that answers, else abstain."""
    topic = question.split()[0]
    for d in documents:
        if f"('{topic}'" in d["text"]:
            call = d["text"].split("`")[1]
            return answer_json(f"Use {call}.", [d["doc_id"]])
    return answer_json(NOT_COVERED, [])


def test_eval_set_skips_bad_lines_with_reasons(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(ITEMS[0]) + "\n{broken\n" + json.dumps({"id": "x", "question": "q"}) + "\n\n")
    items, skipped = load_eval_set(path)
    assert [i["id"] for i in items] == ["q1"]
    assert skipped[0].startswith("line 2: malformed JSON (")
    assert skipped[1].startswith("line 3:") and "reference_answer missing" in skipped[1] and "answerable missing" in skipped[1]
    (tmp_path / "bad.jsonl").write_text("{broken\n")
    with pytest.raises(ValueError, match="no usable item"):
        load_eval_set(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_eval_set(tmp_path / "missing.jsonl")


def test_counterfactual_identifiers_differ_and_never_contain_the_original():
    assert counterfactual_identifier("pipeline('parse', model='acme/parser')", TRAINING) == "acme-labs/parser"
    assert counterfactual_identifier("pipeline('parse', model='acme/parser')", PROBE) == "acme/open-parser"
    assert counterfactual_identifier("joblib.load('model.joblib')", TRAINING) == "model_v2.joblib"
    assert counterfactual_identifier("joblib.load('model.joblib')", PROBE) == "model-ft.joblib"
    assert counterfactual_identifier("mlagents-learn run", TRAINING) == "mlagents-_cf_learn run"
    assert counterfactual_identifier("ab", PROBE) is None
    for identifier in ("x/y", "AutoModel.from_pretrained('aaaa')", "abab", "org/name", "a.b"):
        original = identifier.split("'")[-2 if "'" in identifier else 0]
        training, probe = (counterfactual_identifier(identifier, family) for family in (TRAINING, PROBE))
        assert training and probe and training != probe  # the probe never shows an edit training taught
        assert original not in training and original not in probe


def test_an_edit_replaces_the_identifier_only_where_it_stands_alone():
    chunk = {
        "title": "acme/parser",
        "text": "Load acme/parser, not acme/parser-large, acme/parser_v3 or xacme/parser. Use acme/parser.",
    }
    edited = edit_chunk(chunk, "acme/parser", "acme/open-parser")
    assert edited["title"] == "acme/open-parser"
    assert edited["text"] == "Load acme/open-parser, not acme/parser-large, acme/parser_v3 or xacme/parser. Use acme/open-parser."
    assert edit_chunk({"title": "", "text": "only acme/parser_v3 here"}, "acme/parser", "acme/open-parser") is None


def test_off_topic_contexts_lie_beyond_the_neighbourhood():
    ranked = [{"doc_id": f"d{i}", "chunk_id": f"d{i}#{j}"} for i in range(40) for j in range(2)]  # 2 chunks a document
    assert [c["chunk_id"] for c in off_topic(ranked, {"d21"}, neighbourhood=20, k=3)] == ["d20#0", "d22#0", "d23#0"]
    # a ranking too short to reach past the neighbourhood: its last k documents, never the k served, never gold
    short = ranked[:16]  # 8 documents
    assert [c["doc_id"] for c in off_topic(short, {"d7"}, neighbourhood=20, k=3)] == ["d4", "d5", "d6"]
    assert off_topic(ranked[:6], set(), neighbourhood=20, k=3) == []  # 3 documents: all of them would be served
    assert off_topic(ranked[:10], {"d4"}, neighbourhood=20, k=3) == []  # 1 document left past those served: none


def test_off_topic_context_deepens_a_ranking_of_many_chunks_per_document():
    ranked = [{"doc_id": f"d{i}", "chunk_id": f"d{i}#{j}"} for i in range(60) for j in range(10)]  # 10 chunks a document
    asked = []

    def search(question, n):
        asked.append(n)
        return ranked[:n]

    context = off_topic_context(search, "q", {"d0"}, neighbourhood=20, k=3)
    assert [c["doc_id"] for c in context] == ["d20", "d21", "d22"] and asked == [92, 368]
    asked.clear()
    small = off_topic_context(lambda q, n: asked.append(n) or ranked[:80][:n], "q", set(), 20, 3)  # 8 documents in all
    assert [c["doc_id"] for c in small] == ["d5", "d6", "d7"] and asked == [92]  # the whole corpus: no deeper search


def test_probes_answer_unanswerable_and_counterfactual():
    probes, retrieval = build_probes(ITEMS, search, HarnessConfig(k=2))
    kinds = [(p.item_id, p.kind) for p in probes]
    assert kinds == [
        ("q1", "answer"),
        ("q1", "unanswerable"),
        ("q1", "counterfactual"),
        ("q2", "answer"),
        ("q2", "unanswerable"),
        ("q2", "counterfactual"),
        ("q3", "unanswerable"),
    ]
    by = {(p.item_id, p.kind): p for p in probes}
    assert [d["doc_id"] for d in by["q2", "answer"].documents] == ["other/embedder", "acme/tagger"]  # as served: top k
    # off-topic: a corpus of 4 documents has no neighbourhood of 20, so the lowest-ranked ones, never gold
    # and never those served; the question's own retrieval is not it
    assert [d["doc_id"] for d in by["q2", "unanswerable"].documents] == ["acme/parser", "misc/joblib"]
    assert [d["doc_id"] for d in by["q1", "unanswerable"].documents] == ["other/embedder", "misc/joblib"]
    assert by["q3", "unanswerable"].documents[0]["doc_id"] == "misc/joblib"  # marked unanswerable: as served
    cf = by["q1", "counterfactual"]
    assert (cf.expected, cf.original) == ("acme/open-parser", "acme/parser")
    edited = next(d for d in cf.documents if d["doc_id"] == "acme/parser")
    assert "model='acme/open-parser'" in edited["text"] and "'acme/parser'" not in edited["text"]
    assert len(cf.documents) == 2
    # recall@2: both golds in the top 2; MRR: 1 and 1/2
    assert retrieval == {"recall@2": 1.0, "mrr": 0.75, "answerable_items": 2}
    limited, _ = build_probes(ITEMS, search, HarnessConfig(k=2, limit=2, probe_limit=1))
    assert [(p.item_id, p.kind) for p in limited] == [
        ("q1", "answer"),
        ("q1", "unanswerable"),
        ("q1", "counterfactual"),
        ("q2", "answer"),
    ]


def test_a_faithful_answerer_scores_perfectly_and_no_retrieval_scores_nothing():
    probes, retrieval = build_probes(ITEMS, search, HarnessConfig(k=2))
    answerer = Scripted(faithful)
    report = run_harness(
        probes,
        retrieval,
        [Candidate("challenger_rag", "x"), Candidate("challenger_no_rag", "x", retrieval=False)],
        lambda c: answerer,
        "base",
        HarnessConfig(k=2),
    )
    rag, bare = report.metrics["challenger_rag"], report.metrics["challenger_no_rag"]
    assert rag["identifier_match"] == 1.0 and rag["citation_accuracy"] == 1.0 and rag["format_validity"] == 1.0
    assert rag["abstention"] == 1.0 and rag["adherence"] == 1.0 and rag["false_abstention"] == 0.0
    assert rag["answers"] == 7 and report.items == 3
    assert bare["identifier_match"] == 0.0 and bare["false_abstention"] == 1.0 and bare["answers"] == 2
    assert "abstention" not in bare and "citation_accuracy" not in bare  # not measured without documents
    assert rag["identifier_match_gold_in_context"] == 1.0  # both answer probes show their gold identifier alone
    shown = {
        r["item_id"]: r["identifier_shown"] for r in report.rows if r["candidate"] == "challenger_rag" and r["kind"] == "answer"
    }
    assert shown == {"q1": 1.0, "q2": 1.0}
    rows = [r for r in report.rows if r["candidate"] == "challenger_rag" and r["kind"] == "counterfactual"]
    assert all("acme/open-parser" in r["answer"] or "acme/open-tagger" in r["answer"] for r in rows)


def test_an_answer_naming_every_served_document_wins_no_identifier_match():
    probes, retrieval = build_probes(ITEMS, search, HarnessConfig(k=2))
    hedger = Scripted(
        lambda question, documents: answer_json(
            "Use " + " or ".join(d["doc_id"] for d in documents) + ".", [documents[0]["doc_id"]]
        )
    )
    report = run_harness(probes, retrieval, [Candidate("challenger_rag", "x")], lambda c: hedger, "base", HarnessConfig(k=2))
    answers = [r for r in report.rows if r["kind"] == "answer"]
    assert len(answers) == 2 and all(r["identifier_match"] == 0.0 for r in answers)
    assert report.metrics["challenger_rag"]["identifier_match_gold_in_context"] == 0.0


def test_recorded_rows_score_again_to_the_same_metrics():
    probes, retrieval = build_probes(ITEMS, search, HarnessConfig(k=2))
    candidates = [Candidate("challenger_rag", "x"), Candidate("challenger_no_rag", "x", retrieval=False)]
    report = run_harness(probes, retrieval, candidates, lambda c: Scripted(faithful), "base", HarnessConfig(k=2))
    answers = [r for r in report.rows if r["kind"] == "answer"]
    assert len(answers) == 4
    for row in answers:  # everything a metric reads is on the row
        again = answer_metrics(json.loads(json.dumps(row)), retrieval=row["candidate"] == "challenger_rag")
        assert again == {k: row[k] for k in again} and ("citation_accuracy" in again) == ("citation_accuracy" in row)


def test_summary_of_hand_scored_rows():
    rows = [
        {
            "kind": "answer",
            "identifier_match": 1.0,
            "format_validity": 1.0,
            "citation_accuracy": 0.0,
            "abstained": 0.0,
            "exact_match": 0.0,
            "token_f1": 0.5,
            "latency_ms": 100.0,
            "tokens": 10,
        },
        {
            "kind": "answer",
            "identifier_match": 0.0,
            "format_validity": 0.0,
            "citation_accuracy": 0.0,
            "abstained": 1.0,
            "exact_match": 0.0,
            "token_f1": 0.0,
            "latency_ms": 300.0,
            "tokens": 30,
        },
        {"kind": "unanswerable", "abstention": 1.0, "format_validity": 1.0, "latency_ms": 200.0, "tokens": 20},
    ]
    s = summarise(rows)
    assert s["identifier_match"] == 0.5 and s["format_validity"] == round(2 / 3, 4) and s["abstention"] == 1.0
    assert s["false_abstention"] == 0.5 and s["latency_p50_ms"] == 200.0 and s["latency_p95_ms"] == 290.0
    assert s["tokens_mean"] == 20.0 and "adherence" not in s


def test_conditional_metrics_are_judged_where_the_gold_document_was_in_the_context():
    rows = [  # q1: gold served and named; q2: gold served, abstained; q3: gold not served (retrieval missed)
        {
            "kind": "answer",
            "item_id": "q1",
            "retrieved": ["d1", "x"],
            "gold_doc_ids": ["d1"],
            "identifier_match": 1.0,
            "citation_accuracy": 1.0,
            "abstained": 0.0,
            "format_validity": 1.0,
            "latency_ms": 1.0,
            "tokens": 1,
        },
        {
            "kind": "answer",
            "item_id": "q2",
            "retrieved": ["x", "d2"],
            "gold_doc_ids": ["d2"],
            "identifier_match": 0.0,
            "citation_accuracy": 0.0,
            "abstained": 1.0,
            "format_validity": 1.0,
            "latency_ms": 1.0,
            "tokens": 1,
        },
        {
            "kind": "answer",
            "item_id": "q3",
            "retrieved": ["x", "y"],
            "gold_doc_ids": ["d3"],
            "identifier_match": 0.0,
            "citation_accuracy": 0.0,
            "abstained": 1.0,
            "format_validity": 1.0,
            "latency_ms": 1.0,
            "tokens": 1,
        },
        {
            "kind": "unanswerable",
            "item_id": "q1",
            "retrieved": ["x"],
            "gold_doc_ids": ["d1"],
            "abstention": 1.0,
            "format_validity": 1.0,
            "latency_ms": 1.0,
            "tokens": 1,
        },
    ]
    s = summarise(rows)
    assert s["gold_in_context"] == round(2 / 3, 4)  # of the answer probes only
    assert s["identifier_match"] == round(1 / 3, 4) and s["identifier_match_gold_in_context"] == 0.5
    assert s["citation_accuracy"] == round(1 / 3, 4) and s["citation_accuracy_gold_in_context"] == 0.5
    assert s["false_abstention"] == round(2 / 3, 4) and s["false_abstention_gold_in_context"] == 0.5
    # abstaining there is the right call, and the model's own (no floor declined it)
    assert item_metrics(rows[3]) == {**rows[3], "abstain_decision": 1.0, "abstention_by_model": 1.0}
    assert "abstention_by_model" not in item_metrics({**rows[3], "below_floor": 1.0})
    # the right call to abstain or not: q1 answered with gold (right), q2 abstained with gold (wrong),
    # q1's unanswerable probe abstained (right); q3's retrieval missed its gold, and the documents served
    # instead may answer it: no right call there, so it is reported apart and judged by nothing
    assert s["abstain_decision"] == round(2 / 3, 4) and s["abstained_gold_missed"] == 1.0
    missed = summarise([rows[2]])
    assert missed["gold_in_context"] == 0.0 and "identifier_match_gold_in_context" not in missed  # not measured, not 0
    assert "abstain_decision" not in missed
    # q1 again, its identifier also in the other document served: naming it no longer shows which one was read
    shared = summarise([{**rows[0], "identifier_shown": 0.0}])
    assert shared["citation_accuracy_gold_in_context"] == 1.0 and "identifier_match_gold_in_context" not in shared
    assert summarise([{**rows[0], "identifier_shown": 1.0}])["identifier_match_gold_in_context"] == 1.0


def test_versions_and_the_base_model_are_cached_but_unregistered_adapters_are_not(tmp_path):
    probes, retrieval = build_probes(ITEMS, search, HarnessConfig(k=2))
    answerer = Scripted(faithful)
    candidates = [Candidate("base_rag", None), Candidate("champion_rag", "dir", version="3"), Candidate("adhoc", "dir")]
    first = run_harness(probes, retrieval, candidates, lambda c: answerer, "base", HarnessConfig(k=2), cache_dir=tmp_path)
    assert answerer.calls == 21
    again = run_harness(probes, retrieval, candidates, lambda c: answerer, "base", HarnessConfig(k=2), cache_dir=tmp_path)
    assert answerer.calls == 28  # only the unregistered adapter answered again
    assert again.metrics == first.metrics
    assert all(r.get("cached") for r in again.rows if r["candidate"] != "adhoc")
    other_budget = HarnessConfig(k=2, max_new_tokens=64)  # different decoding: a different key
    run_harness(probes, retrieval, candidates[:1], lambda c: answerer, "base", other_budget, cache_dir=tmp_path)
    assert answerer.calls == 35


def test_a_version_whose_weights_changed_is_answered_again(tmp_path):
    """A recreated registry reuses version numbers: the cache key holds the adapter's weights, not only "3"."""
    probes, retrieval = build_probes(ITEMS, search, HarnessConfig(k=2))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    answerer = Scripted(faithful)
    champion = [Candidate("champion_rag", str(adapter), version="3")]
    for _ in range(2):
        run_harness(probes, retrieval, champion, lambda c: answerer, "base", HarnessConfig(k=2), cache_dir=tmp_path / "cache")
    assert answerer.calls == 7  # the second run came from the cache
    (adapter / "adapter_model.safetensors").write_bytes(b"weights two")
    run_harness(probes, retrieval, champion, lambda c: answerer, "base", HarnessConfig(k=2), cache_dir=tmp_path / "cache")
    assert answerer.calls == 14


def test_below_its_floor_a_candidate_declines_without_generating(tmp_path):
    """A candidate with retrieval and a floor declines the probes whose relevance is below it, as serving does;
    one without a floor answers them all; one without documents has no context to judge. The declined rows
    carry no format validity or tokens; the same declines from another floor reuse the cached rows."""
    gold = {"parse my text": "acme/parser", "tag my text": "acme/tagger"}

    def relate(question, chunks):  # scripted: a context holding the question's gold document is the related one
        return 0.9 if gold.get(question) in {c["doc_id"] for c in chunks} else 0.1

    config = HarnessConfig(k=2)
    probes, retrieval = build_probes(ITEMS, search, config, relate)
    low = [p for p in probes if p.relevance < 0.5]
    assert {(p.item_id, p.kind) for p in low} == {("q1", "unanswerable"), ("q2", "unanswerable"), ("q3", "unanswerable")}
    answerer = Scripted(faithful)
    candidates = [
        Candidate("base_rag", None),
        Candidate("challenger_rag", "x", version="2", floor=0.5),
        Candidate("challenger_no_rag", "x", retrieval=False, version="2", floor=0.5),
    ]
    report = run_harness(probes, retrieval, candidates, lambda c: answerer, "base", config, cache_dir=tmp_path)
    assert answerer.calls == len(probes) + (len(probes) - len(low)) + 2  # the declined were never asked
    floored = [r for r in report.rows if r["candidate"] == "challenger_rag"]
    assert sum(r["below_floor"] for r in floored) == 3
    for row in (r for r in floored if r["below_floor"]):
        assert row["answer"] == NOT_COVERED and row["abstention"] == 1.0
        assert "format_validity" not in row and "tokens" not in row  # the model wrote nothing
    mine, base = report.metrics["challenger_rag"], report.metrics["base_rag"]
    assert mine["below_floor"] == round(3 / 7, 4) and mine["abstention"] == 1.0
    assert "abstention_by_model" not in mine  # every off-topic probe was declined by the floor
    assert base["abstention_by_model"] == base["abstention"] and "below_floor" not in base
    assert all("below_floor" not in r for r in report.rows if r["candidate"] == "challenger_no_rag")
    calls = answerer.calls
    same = [Candidate("challenger_rag", "x", version="2", floor=0.4)]  # another value, the same probes declined
    run_harness(probes, retrieval, same, lambda c: answerer, "base", config, cache_dir=tmp_path)
    assert answerer.calls == calls
    lower = [Candidate("challenger_rag", "x", version="2", floor=0.05)]  # nothing is below it: answered again
    run_harness(probes, retrieval, lower, lambda c: answerer, "base", config, cache_dir=tmp_path)
    assert answerer.calls == calls + len(probes)
