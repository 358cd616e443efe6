"""The APIBench importer: documents with stable ids, a seeded split, gold ids that the loader produces."""

import json

import pytest
from conftest import APIBENCH

from ragtune.behaviour.interactions import OPTIONAL_FIELDS, RECORD_FIELDS
from ragtune.cli.apibench import import_apibench
from ragtune.knowledge.documents import load_documents


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def tiny(tmp_path):
    apis = [
        {
            "api_name": "org/model-a",
            "api_call": "AutoModel.from_pretrained('org/model-a')",
            "description": "Model A.",
            "domain": "NLP",
        },
        {"api_name": "model_id", "api_call": "hub.load('https://tfhub.dev/x/1')", "description": "X."},
        {"api_name": "model_id", "api_call": "hub.load('https://tfhub.dev/y/1')", "description": "Y."},
    ]
    questions = [
        {
            "code": f"###Instruction: question {i}\n###Output: <<<api_call>>>: {a['api_call']}",
            "api_call": a["api_call"],
            "api_data": a,
        }
        for i, a in enumerate(apis * 4)
    ]
    write_jsonl(tmp_path / "api.jsonl", apis)
    write_jsonl(tmp_path / "q.json", questions)
    (tmp_path / "api.jsonl").write_text((tmp_path / "api.jsonl").read_text() + "{broken\n")
    return tmp_path


def test_import_writes_documents_interactions_and_eval(tiny):
    out = tiny / "out"
    report = import_apibench(tiny / "api.jsonl", tiny / "q.json", out, eval_fraction=0.25, seed=1)
    assert report.documents == 3 and report.eval_items == 3 and report.interactions == 9
    assert len(report.bad_lines) == 1
    ids = {d.doc_id for d in load_documents(out / "docs").documents}
    assert "org/model-a" in ids
    repeated = sorted(i for i in ids if i.startswith("model_id-"))
    assert len(repeated) == 2  # repeated names get a short hash of the api_call
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    inters = [json.loads(line) for line in (out / "interactions.jsonl").read_text().splitlines()]
    assert all(set(e["gold_doc_ids"]) <= ids and e["answerable"] for e in evals)
    assert set(RECORD_FIELDS) - set(OPTIONAL_FIELDS) <= set(inters[0])
    assert all(i["feedback"] == "up" and i["citations"][0]["doc_id"] in ids for i in inters)
    assert not {e["id"] for e in evals} & {i["id"] for i in inters}


def test_import_is_deterministic_for_a_seed(tiny):
    a = import_apibench(tiny / "api.jsonl", tiny / "q.json", tiny / "a", seed=3)
    b = import_apibench(tiny / "api.jsonl", tiny / "q.json", tiny / "b", seed=3)
    assert a.as_dict() == b.as_dict()
    assert (tiny / "a" / "eval.jsonl").read_text() == (tiny / "b" / "eval.jsonl").read_text()


@pytest.mark.skipif(not APIBENCH.exists(), reason="../shared/data/apibench not present")
def test_real_huggingface_split_finds_every_gold_document(tmp_path):
    report = import_apibench(APIBENCH / "huggingface_api.jsonl", APIBENCH / "huggingface_eval.json", tmp_path)
    assert report.documents == 936 and report.questions_without_gold == 0
    assert report.eval_items + report.interactions == 911
    assert len(list((tmp_path / "docs").glob("*.md"))) == 936  # no two ids collide on disk


def test_a_question_that_cannot_be_told_from_its_answer_is_skipped_and_a_file_of_them_refused(tiny):
    rows = [json.loads(line) for line in (tiny / "q.json").read_text().splitlines()]
    other = {**rows[0], "code": "Q: which model for x?\nA: AutoModel.from_pretrained('org/model-a')"}  # another layout
    write_jsonl(tiny / "mixed.json", [*rows, other])
    report = import_apibench(tiny / "api.jsonl", tiny / "mixed.json", tiny / "mixed")
    assert report.interactions + report.eval_items == len(rows)  # the odd one is not imported whole as a question
    assert report.unseparated == ["mixed.json:13: " + report.unseparated[0].split(": ", 1)[1]]
    assert "cannot be told apart" in report.unseparated[0]
    imported = (tiny / "mixed" / "interactions.jsonl").read_text() + (tiny / "mixed" / "eval.jsonl").read_text()
    assert "A: AutoModel" not in imported

    write_jsonl(tiny / "other.json", [{**r, "code": r["code"].replace("###Instruction:", "Q:")} for r in rows])
    with pytest.raises(ValueError, match="12 of 12 questions .* not the APIBench layout"):
        import_apibench(tiny / "api.jsonl", tiny / "other.json", tiny / "other")
    assert not (tiny / "other").exists()  # refused before anything was written
