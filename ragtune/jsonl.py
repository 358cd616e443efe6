"""JSON Lines, read and written one way everywhere.

    rows = read_jsonl(path)                       # strict: a bad line is an error naming file and line
    for number, row, problem in iter_jsonl(path): # tolerant: a bad line is reported, the rest still read
    write_jsonl(path, rows)                       # atomic: a temporary file renamed, never half a file
    append_jsonl(path, row)                       # one line added to a log

Blank lines are skipped. A line that is not a JSON object is "bad": the tolerant readers (the
interaction import, document and APIBench loaders, evaluation sets) skip it with its line number and
reason; internal files the project wrote itself are read strictly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path


def parse_lines(text: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, the object, None) for each non-blank line, or (line number, None, why it is not one).

    Lines end at "\n" only (a "\r" before it is dropped): str.splitlines would also break at U+2028,
    U+2029 and U+0085, which json.dumps(ensure_ascii=False) leaves unescaped inside strings."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"malformed JSON ({exc.msg})"
            continue
        if isinstance(row, dict):
            yield number, row, None
        else:
            yield number, None, "not a JSON object"


def iter_jsonl(path: Path | str) -> Iterator[tuple[int, dict | None, str | None]]:
    """parse_lines over a UTF-8 file."""
    yield from parse_lines(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path | str) -> list[dict]:
    """Every object of a file the project wrote; [] when there is no file; ValueError naming a bad line."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, row, problem in iter_jsonl(path):
        if problem:
            raise ValueError(f"{path}:{number}: {problem}")
        rows.append(row)
    return rows


def append_jsonl(path: Path | str, row: dict) -> None:
    """Add one line to a log file (the index history): one short write, so lines never interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_jsonl(path: Path | str, rows) -> Path:
    """Write `rows` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    with partial.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path
