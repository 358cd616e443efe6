"""Curation rules: feedback and corrections, length, PII scrubbing, de-duplication, forgotten users, erasure."""

import pytest

from ragtune.behaviour.curation import CurationPolicy, curate
from ragtune.llm.generator import FALLBACK_PREFIX
from ragtune.quality import curated_frame, validate_curated_schema, validate_no_pii, validate_not_empty

TOPICS = [
    "translate German legal contracts into English",
    "detect objects in warehouse camera footage",
    "summarise long customer support tickets",
    "transcribe podcast audio with timestamps",
]


def rec(i: int, question: str | None = None, answer: str | None = None, feedback="up", correction=None, user="alice", minute=0):
    return {
        "id": f"r{i}",
        "ts": f"2025-01-01T00:{minute:02d}:{i % 60:02d}+00:00",
        "user": user,
        "question": question if question is not None else f"How do I load model number {i} for text classification?",
        "answer": answer if answer is not None else f"Use pipeline('text-classification', model='org/model-{i}').",
        "citations": [{"doc_id": f"org/model-{i}", "chunk_id": None}],
        "feedback": feedback,
        "correction": correction,
    }


@pytest.mark.parametrize(
    "feedback, correction, kept, answer",
    [
        ("up", None, True, "original"),
        ("down", None, False, None),
        (None, None, False, None),
        ("down", "Use the corrected pipeline call instead.", True, "Use the corrected pipeline call instead."),
        (None, "Use the corrected pipeline call instead.", True, "Use the corrected pipeline call instead."),
        ("up", "   ", True, "original"),  # a blank correction is no correction
    ],
)
def test_feedback_and_correction_rules(feedback, correction, kept, answer):
    r = rec(1, answer="original answer text that is long enough", feedback=feedback, correction=correction)
    out = curate([r], set())
    assert (out.report.kept == 1) is kept
    if kept:
        got = out.records[0]["answer"]
        assert got.startswith(answer) and out.records[0]["source"] == ("correction" if answer != "original" else "feedback")
    else:
        assert out.report.dropped == {"no_positive_feedback": 1}


def test_an_approved_fallback_reply_is_not_training_data_unless_corrected():
    unreadable = FALLBACK_PREFIX + "{'answer': Use pipeline("
    out = curate(
        [rec(1, answer=unreadable), rec(2, answer=unreadable, correction="Use pipeline('ner') from transformers.")], set()
    )
    assert out.report.dropped == {"unreadable_answer": 1}
    assert [r["id"] for r in out.records] == ["r2"] and out.records[0]["source"] == "correction"


@pytest.mark.parametrize(
    "question, answer, reason",
    [
        ("", "a long enough answer to keep around", "empty"),
        ("Is this a question long enough?", "   ", "empty"),
        ("short?", "a long enough answer to keep around", "too_short"),
        ("Is this a question long enough?", "too short", "too_short"),
        ("Is this a question long enough? " * 100, "a long enough answer to keep around", "too_long"),
        ("Is this a question long enough?", "x" * 2001, "too_long"),
    ],
)
def test_length_rules(question, answer, reason):
    out = curate([rec(1, question=question, answer=answer)], set(), CurationPolicy())
    assert out.report.kept == 0 and out.report.dropped == {reason: 1}


def test_exact_and_near_duplicates_keep_the_newest():
    q = "How can I classify the sentiment of customer reviews written in German with a pretrained model?"
    records = [
        rec(1, question=q, answer="oldest answer, long enough to keep", minute=1),
        rec(2, question=q.upper(), answer="newest exact duplicate answer", minute=9),  # same after normalising
        rec(3, question=q.replace("customer", "client"), answer="a near duplicate answer, long enough", minute=5),
        rec(4, question="Which model transcribes English speech to text with timestamps for a podcast?", minute=2),
    ]
    out = curate(records, set())
    assert sorted(r["id"] for r in out.records) == ["r2", "r4"]
    assert out.report.dropped == {"duplicate": 1, "near_duplicate": 1}


def test_pii_is_scrubbed_with_typed_placeholders_and_counted():
    question = "I am jane.doe@example.com, call +1 (415) 555-0132; why does my key sk-proj-abcdefghijklmnopqrstuvwx12 fail?"
    answer = "Rotate the key and send the header Authorization: Bearer abcDEF123456ghiJKL789mno, then retry from 10.0.0.12."
    out = curate([rec(1, question=question, answer=answer)], set())
    (r,) = out.records
    assert "<EMAIL_ADDRESS>" in r["question"] and "<PHONE_NUMBER>" in r["question"] and "<API_KEY>" in r["question"]
    assert "<BEARER_TOKEN>" in r["answer"] and "<IP_ADDRESS>" in r["answer"]
    assert "jane.doe" not in r["question"] and "abcDEF123456" not in r["answer"]
    assert out.report.redactions == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "API_KEY": 1, "BEARER_TOKEN": 1, "IP_ADDRESS": 1}
    assert validate_no_pii(curated_frame(out.records), ["question", "answer"]).success


def test_published_sample_ssns_are_redacted_too():
    """Presidio rejects 123-45-6789 and 078-05-1120 as published samples; in training data they go all the same."""
    out = curate([rec(1, question="My SSN is 123-45-6789, and my wife's is 078-05-1120: which form?")], set())
    (r,) = out.records
    assert "123-45-6789" not in r["question"] and "078-05-1120" not in r["question"]
    assert out.report.redactions == {"US_SSN": 2} and not out.report.quarantined


def test_a_record_with_pii_left_after_scrubbing_is_quarantined_not_the_run():
    import hashlib

    # an address with a doubled dot: no recognizer takes it, the independent residue pattern does
    leaky = rec(2, question="Mail the weights to jane.doe@corp..com, how do I export them?")
    out = curate([rec(1), leaky, rec(3)], set())
    assert [r["id"] for r in out.records] == ["r1", "r3"] and out.report.dropped == {"pii_residue": 1}
    (q,) = out.report.quarantined
    assert q["id"] == "r2" and q["kinds"] == ["EMAIL_ADDRESS"] and "jane" not in str(q)
    assert q["sha256"] == hashlib.sha256(f"{leaky['question']}\x1f{leaky['answer']}".encode()).hexdigest()
    assert validate_no_pii(curated_frame(out.records), ["question", "answer"]).success


def test_forgotten_users_are_excluded():
    out = curate([rec(1, user="bob"), rec(2, user="alice")], {"bob"})
    assert [r["user"] for r in out.records] == ["alice"] and out.report.dropped == {"forgotten_user": 1}


def test_checks_fail_on_leftover_pii_and_on_empty_data():
    leaked = curate([rec(1)], set()).records
    leaked[0]["question"] = "contact me at someone@example.org please"
    result = validate_no_pii(curated_frame(leaked), ["question", "answer"])
    assert not result.success and result.failures
    assert not validate_not_empty(curated_frame([]), "curated_not_empty").success
    from assets.interactions import curated_has_no_pii

    blocked = curated_has_no_pii(leaked)  # the blocking check names the records that got through
    assert not blocked.passed and "records: r1" in blocked.description
    assert validate_curated_schema(curated_frame(curate([rec(1), rec(2)], set()).records)).success


def test_forget_erases_log_curated_and_datasets_and_flags_versions(home, tmp_path):
    from conftest import register_versions

    from ragtune.behaviour.datasets import load_curated, save_curated, save_raft
    from ragtune.behaviour.erasure import forget
    from ragtune.behaviour.interactions import InteractionLog
    from ragtune.jsonl import read_jsonl
    from ragtune.registry import list_versions
    from ragtune.settings import load_settings

    s = load_settings()
    log = InteractionLog(s.interactions_db)
    log.extend([rec(i, question=f"Which model can {TOPICS[i]}?", user="bob" if i < 2 else "alice") for i in range(4)])
    save_curated(s.datasets_dir, curate(log.records(), set()).records)
    rows = [{"id": f"r{i}", "user": "bob" if i < 2 else "alice"} for i in range(4)]
    save_raft(s.datasets_dir, "hashwithbob", {"train": rows[:3], "validation": rows[3:]}, {})
    save_raft(s.datasets_dir, "hashwithout", {"train": rows[2:], "validation": []}, {})
    versions = dict(
        zip(["hashwithbob", "hashwithout"], register_versions(s, ["hashwithbob", "hashwithout"], tmp_path / "adapter"))
    )

    report = forget(s, "bob")
    assert report["interactions_removed"] == 2 and report["curated_removed"] == 2
    assert report["datasets"] == ["hashwithbob"] and report["dataset_rows_removed"] == 2
    assert report["versions_flagged"] == [versions["hashwithbob"]]
    assert {r["user"] for r in log.records()} == {"alice"} and "bob" in log.forgotten()
    assert {r["user"] for r in load_curated(s.datasets_dir)} == {"alice"}
    assert read_jsonl(s.datasets_dir / "raft-hashwithbob" / "train.jsonl") == rows[2:3]
    tags = {v["version"]: v["tags"] for v in list_versions(s.tracking_uri, s.registered_model)}
    assert tags[versions["hashwithbob"]]["needs_retrain"] == "true"
    assert "needs_retrain" not in tags[versions["hashwithout"]]
    log.extend([rec(9, user="bob")])  # a later import cannot bring the user back into training data
    assert all(r["user"] != "bob" for r in curate(log.records(), log.forgotten()).records)
