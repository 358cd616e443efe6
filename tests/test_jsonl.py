"""The one JSON Lines reader and writer."""

import pytest

from ragtune.jsonl import append_jsonl, iter_jsonl, read_jsonl, write_jsonl


def test_tolerant_reading_reports_each_bad_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n[1, 2]\n{"a": 3}\n', encoding="utf-8")
    lines = list(iter_jsonl(path))
    assert [(n, row) for n, row, problem in lines if not problem] == [(1, {"a": 1}), (5, {"a": 3})]
    assert [(n, problem.split(" (")[0]) for n, _, problem in lines if problem] == [
        (3, "malformed JSON"),
        (4, "not a JSON object"),
    ]
    with pytest.raises(ValueError, match=r"mixed\.jsonl:3: malformed JSON"):
        read_jsonl(path)  # the project's own files are read strictly


def test_writing_is_atomic_and_round_trips_unicode(tmp_path):
    path = tmp_path / "deep" / "rows.jsonl"
    rows = [{"q": "Größe?", "n": 1}, {"q": "日本語", "n": 2}]
    assert write_jsonl(path, rows) == path and read_jsonl(path) == rows
    assert "Größe" in path.read_text(encoding="utf-8")  # not escaped
    assert [p.name for p in path.parent.iterdir()] == ["rows.jsonl"]  # no partial file left behind
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_appending_adds_whole_lines(tmp_path):
    path = tmp_path / "logs" / "history.jsonl"
    append_jsonl(path, {"action": "refresh", "version": 1})
    append_jsonl(path, {"action": "rollback", "to": 1})
    assert read_jsonl(path) == [{"action": "refresh", "version": 1}, {"action": "rollback", "to": 1}]


def test_line_and_paragraph_separators_inside_strings_do_not_split_a_record(tmp_path):
    path = tmp_path / "odd.jsonl"
    rows = [{"q": "a\u2028b\u2029c\x85d"}, {"q": "windows"}]
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    path.write_bytes(b'{"q": 1}\r\n{"q": 2}\r\n')  # written on Windows
    assert read_jsonl(path) == [{"q": 1}, {"q": 2}]
