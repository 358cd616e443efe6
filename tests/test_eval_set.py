"""The evaluation set of a retrain: held out from the user's own curated interactions, never from another corpus."""

import json

import pytest

from evaluation.eval_set import (
    build_evaluation_set,
    eval_items_from_curated,
    held_out,
    split_holdout,
    spread_over_documents,
    too_few_message,
    usable_items,
)
from ragtune.llm.prompting import NOT_COVERED


def curated(n: int, doc: str = "org/model") -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "ts": "2025-01-01T00:00:00+00:00",
            "user": "u",
            "question": f"question number {i}?",
            "answer": f"Use {doc}-{i}.",
            "gold_doc_ids": [f"{doc}-{i}"],
            "source": "feedback",
        }
        for i in range(n)
    ]


def test_the_holdout_is_stable_as_the_log_grows_and_never_overlaps_training():
    first_train, first_eval = split_holdout(curated(200), 0.2)
    grown_train, grown_eval = split_holdout(curated(400), 0.2)
    assert {r["id"] for r in first_eval} <= {r["id"] for r in grown_eval}  # an interaction stays on its side
    assert not {r["id"] for r in grown_train} & {r["id"] for r in grown_eval}
    assert 0.12 < len(grown_eval) / 400 < 0.28  # about the share asked for
    assert held_out("r1", 0.2) == held_out("r1", 0.2) and held_out("r1", 0.2, seed=1) in (True, False)


def test_items_come_from_approved_answers_and_abstentions_become_unanswerable():
    records = curated(2) + [{"id": "x", "question": "what is the weather?", "answer": NOT_COVERED, "gold_doc_ids": []}]
    items = eval_items_from_curated(records)
    assert items[0] == {
        "id": "r0",
        "question": "question number 0?",
        "reference_answer": "Use org/model-0.",
        "gold_doc_ids": ["org/model-0"],
        "answerable": True,
    }
    assert items[2]["answerable"] is False


def test_items_the_index_cannot_answer_are_skipped_with_their_reason():
    items = eval_items_from_curated(curated(3)) + [
        {"id": "n", "question": "q?", "reference_answer": "Use it.", "gold_doc_ids": [], "answerable": True}
    ]
    usable, skipped = usable_items(items, indexed_doc_ids := {"org/model-0", "org/model-2"})
    assert [i["id"] for i in usable] == ["r0", "r2"]
    assert skipped == [
        "r1: gold documents not in the live index (org/model-1)",
        "n: no gold documents (the approved answer cites none)",
    ]
    assert indexed_doc_ids  # the filter never empties the index's ids


def test_an_explicit_set_of_another_corpus_is_judged_on_nothing(tmp_path):
    path = tmp_path / "eval.jsonl"
    other = [{**r, "question": f"another corpus asks {i}?"} for i, r in enumerate(curated(5, doc="other/corpus"))]
    path.write_text("".join(json.dumps(i) + "\n" for i in eval_items_from_curated(other)))
    chosen = build_evaluation_set(curated(50), path, {f"org/model-{i}" for i in range(50)}, 0.2)
    assert chosen["items"] == [] and len(chosen["skipped"]) == 5 and chosen["held_out_ids"] == []
    own = build_evaluation_set(curated(50), None, {f"org/model-{i}" for i in range(50)}, 0.2)
    assert own["source"] == "held-out" and own["items"] and {i["id"] for i in own["items"]} == set(own["held_out_ids"])


def test_an_explicit_sets_questions_are_never_trained_on(tmp_path):
    path = tmp_path / "eval.jsonl"
    items = eval_items_from_curated(curated(3))
    items[1]["question"] = "  QUESTION number 1 "  # the same question, written differently
    path.write_text("".join(json.dumps(i) + "\n" for i in items[1:]))
    chosen = build_evaluation_set(curated(10), path, {f"org/model-{i}" for i in range(10)}, 0.2)
    assert chosen["held_out_ids"] == ["r1", "r2"] and len(chosen["items"]) == 2


def test_paraphrases_of_one_document_fall_on_one_side():
    records = [{**r, "gold_doc_ids": [f"org/model-{i // 4}"]} for i, r in enumerate(curated(400))]  # 4 questions a document
    train, evaluation = split_holdout(records, 0.2)
    assert not {d for r in train for d in r["gold_doc_ids"]} & {d for r in evaluation for d in r["gold_doc_ids"]}


def test_too_few_items_says_what_to_provide():
    message = too_few_message(7, 30, 9, 2, explicit=False)
    assert "only 7 usable answerable evaluation items" in message and "at least 30" in message
    assert "--eval-set" in message and "--gate" in message
    assert "RAGTUNE_EVAL_PER_DOCUMENT" not in message  # nothing was capped
    capped = too_few_message(7, 30, 40, 0, explicit=False, capped=33, per_document=3, documents=3)
    assert "33 more left out by the cap of 3 per gold document" in capped and "cover 3 documents" in capped


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_degenerate_fractions_keep_everything_on_one_side(fraction):
    train, evaluation = split_holdout(curated(20), fraction)
    assert (len(train), len(evaluation)) == ((20, 0) if fraction == 0.0 else (0, 20))


def test_one_popular_document_cannot_fill_the_evaluation_set():
    popular = [{**r, "gold_doc_ids": ["org/popular"]} for r in curated(10)]  # ten questions on one document
    others = [{**r, "id": f"o{i}"} for i, r in enumerate(curated(4, doc="org/other"))]
    abstention = {"id": "x", "question": "the weather?", "answer": NOT_COVERED, "gold_doc_ids": []}
    items = eval_items_from_curated(popular + others + [abstention])
    spread, capped = spread_over_documents(items, 3)
    assert capped == 7 and len(spread) == 8
    assert [i["id"] for i in spread if i["gold_doc_ids"] == ["org/popular"]] == ["r0", "r1", "r2"]  # the earliest
    assert [i["gold_doc_ids"] for i in spread[:6]] == [
        ["org/popular"],
        *([d] for d in ["org/other-0", "org/other-1", "org/other-2", "org/other-3"]),
        [],
    ]
    assert spread[6]["id"] == "r1"  # round-robin: a limit of 6 would cover all six documents first
    assert spread_over_documents(items, 0) == (items, 0) and spread_over_documents(items, None) == (items, 0)


def test_the_cap_reaches_the_evaluation_set_and_leaves_the_capped_items_out_of_training():
    records = [{**r, "gold_doc_ids": [f"org/model-{i // 10}"]} for i, r in enumerate(curated(400))]  # 10 questions a document
    chosen = build_evaluation_set(records, None, {f"org/model-{i}" for i in range(40)}, 0.3, per_document=2)
    assert chosen["capped"] > 0 and chosen["per_document"] == 2
    assert len(chosen["items"]) == 2 * chosen["documents"] and len(chosen["held_out_ids"]) == 10 * chosen["documents"]
    uncapped = build_evaluation_set(records, None, {f"org/model-{i}" for i in range(40)}, 0.3)
    assert uncapped["capped"] == 0 and len(uncapped["items"]) == len(chosen["held_out_ids"])
