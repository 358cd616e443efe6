"""The interaction log: import, feedback, forget, and many concurrent writers."""

import json
import multiprocessing

import pytest

from ragtune.behaviour.interactions import InteractionLog, RecordError, normalise_record


def record(i: int, user: str = "alice", **extra) -> dict:
    return {
        "id": f"r{i}",
        "ts": f"2025-01-01T00:00:{i:02d}+00:00",
        "user": user,
        "question": f"question {i}?",
        "answer": f"answer {i}",
        "citations": [{"doc_id": f"doc{i}", "chunk_id": None}],
        **extra,
    }


def test_import_skips_malformed_lines_and_is_idempotent(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps(record(1, feedback="up")),
        "{not json",
        json.dumps({"question": "no answer"}),
        json.dumps(record(2, feedback="sideways")),
        "",
        json.dumps(record(3)),
    ]
    path.write_text("\n".join(lines) + "\n")
    log = InteractionLog(f"sqlite:///{tmp_path / 'log.db'}")
    report = log.import_jsonl(path)
    assert (report.read, report.added, report.already_present) == (5, 2, 0)
    assert [b["line"] for b in report.bad_lines] == [2, 3, 4]
    assert "answer" in report.bad_lines[1]["reason"] and "feedback" in report.bad_lines[2]["reason"]
    again = log.import_jsonl(path)
    assert (again.added, again.already_present) == (0, 2)
    assert log.count() == 2
    assert {r["id"]: r["feedback"] for r in log.records()} == {"r1": "up", "r3": None}


def test_newest_feedback_wins_and_unknown_ids_fail(tmp_path):
    log = InteractionLog(f"sqlite:///{tmp_path / 'log.db'}")
    rid, added = log.append(record(1))
    assert added and rid == "r1"
    log.add_feedback("r1", "down")
    log.add_feedback("r1", "down", correction="the right answer")
    (r,) = log.records()
    assert (r["feedback"], r["correction"]) == ("down", "the right answer")
    with pytest.raises(KeyError):
        log.add_feedback("missing", "up")
    with pytest.raises(RecordError):
        log.add_feedback("r1", "meh")
    assert log.append(record(1, answer="changed"))[1] is False  # append-only: a known id is not rewritten
    assert log.records()[0]["answer"] == "answer 1"


def test_normalise_fills_defaults_and_rejects_bad_types():
    r = normalise_record({"question": "q", "answer": "a"})
    assert r["id"] and r["ts"] and r["user"] == "anonymous" and r["citations"] == [] and r["feedback"] is None
    for bad in (
        {"question": 1, "answer": "a"},
        {"question": "q", "answer": "a", "citations": [{"chunk_id": "x"}]},
        {"question": "q", "answer": "a", "latency_ms": "fast"},
        ["not", "an", "object"],
    ):
        with pytest.raises(RecordError):
            normalise_record(bad)


def test_forget_removes_records_and_feedback_and_remembers_the_user(tmp_path):
    log = InteractionLog(f"sqlite:///{tmp_path / 'log.db'}")
    for i in range(4):
        log.append(record(i, user="bob" if i % 2 else "alice", feedback="up"))
    assert log.forget("bob") == 2
    assert {r["user"] for r in log.records()} == {"alice"} and log.count() == 2
    assert log.forgotten() == {"bob"}
    assert log.forget("bob") == 0  # idempotent


def write_many(url: str, worker: int, n: int) -> None:
    log = InteractionLog(url)
    for i in range(n):
        log.append({"id": f"w{worker}-{i}", "user": f"u{worker}", "question": f"q {worker} {i}", "answer": "a", "feedback": "up"})


def test_eight_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    # no schema yet: the eight writers create it as they start
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=write_many, args=(url, w, 500)) for w in range(8)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0] * 8
    records = InteractionLog(url).records()
    ids = [r["id"] for r in records]
    assert len(ids) == 4000 and len(set(ids)) == 4000
    assert ids_per_worker(ids) == {str(w): 500 for w in range(8)}
    assert all(r["feedback"] == "up" for r in records)


def ids_per_worker(ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in ids:
        w = i[1:].split("-")[0]
        counts[w] = counts.get(w, 0) + 1
    return counts


def test_forgotten_users_are_refused_on_import_and_timestamps_are_utc(tmp_path):
    log = InteractionLog(f"sqlite:///{tmp_path / 'log.db'}")
    log.append(record(1, user="bob"))
    log.forget("bob")
    path = tmp_path / "again.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [record(1, user="bob"), record(2, user="alice", ts="2025-01-01T02:00:00+02:00")]) + "\n"
    )
    report = log.import_jsonl(path)
    assert (report.added, report.forgotten, report.already_present) == (1, 1, 0)
    assert [(r["user"], r["ts"]) for r in log.records()] == [("alice", "2025-01-01T00:00:00+00:00")]
    assert log.append(record(3, user="bob")) == ("r3", False)
    with pytest.raises(RecordError, match="ts"):
        normalise_record({"question": "q", "answer": "a", "ts": "yesterday"})


def test_a_log_from_before_the_review_columns_gains_them_and_keeps_its_rows(tmp_path):
    """A database written by an earlier release (no retrieved/fallback/shadow_of, no review fields) opens,
    gains the columns, reads its old rows back with None, and takes reviews."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE interactions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id VARCHAR(64) NOT NULL UNIQUE,
                ts VARCHAR(40) NOT NULL, user VARCHAR(200) NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL,
                citations TEXT NOT NULL, model_version VARCHAR(64), index_version VARCHAR(64), latency_ms FLOAT);
            CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, interaction_id VARCHAR(64) NOT NULL,
                rating VARCHAR(8), correction TEXT, ts VARCHAR(40) NOT NULL);
            CREATE TABLE forgotten_users (user VARCHAR(200) PRIMARY KEY, ts VARCHAR(40) NOT NULL);
            INSERT INTO interactions (id, ts, user, question, answer, citations)
                VALUES ('old-1', '2026-01-01T00:00:00+00:00', 'ana', 'How do I parse a PDF file?', 'Use pypdf.', '[]');
            INSERT INTO feedback (interaction_id, rating, ts) VALUES ('old-1', 'up', '2026-01-01T00:01:00+00:00');
            """
        )
    log = InteractionLog(f"sqlite:///{path}")
    (old,) = log.records()
    assert (old["feedback"], old["retrieved"], old["fallback"], old["shadow_of"], old["reviewer"]) == (
        "up",
        None,
        None,
        None,
        None,
    )
    log.add_feedback("old-1", "up", None, ["pypdf-docs"], reviewer="rita")
    (reviewed,) = log.records()
    assert (reviewed["reviewer"], reviewed["gold_citations"]) == ("rita", ["pypdf-docs"])
    log.add_feedback("old-1", "down", "Use pdfminer.", ["other-docs"])  # a user's later vote never undoes a review
    (voted,) = InteractionLog(f"sqlite:///{path}").records()  # opening again adds nothing twice
    assert (voted["feedback"], voted["correction"], voted["reviewer"]) == ("up", None, "rita")
    assert (voted["gold_citations"], voted["user_feedback"]) == (["pypdf-docs"], "down")
    log.add_feedback("old-1", "down", "Use pypdf.PdfReader.", None, reviewer="sam")  # a later review does
    (again,) = log.records()
    assert (again["feedback"], again["correction"], again["reviewer"], again["gold_citations"]) == (
        "down",
        "Use pypdf.PdfReader.",
        "sam",
        ["pypdf-docs"],
    )
    assert old["retrieved"] is None  # logged before the context was kept: unknown, not "nothing retrieved"
