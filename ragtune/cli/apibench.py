"""Convert APIBench (Gorilla) files into ragtune's input formats.

    ragtune import-apibench --api huggingface_api.jsonl --questions huggingface_eval.json --out DIR

writes DIR/docs/*.md (one document per API entry), DIR/interactions.jsonl (the
training share of the questions as accepted interactions) and DIR/eval.jsonl
(the held-out share, with gold document ids). Deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from ragtune.jsonl import iter_jsonl, write_jsonl

IMPORT_EPOCH = datetime(2024, 3, 15, tzinfo=UTC)  # fixed, so output is reproducible
ATTRIBUTION = "APIBench, Gorilla project (ShishirPatil/gorilla), Apache-2.0"


@dataclass
class ImportReport:
    documents: int = 0
    interactions: int = 0
    eval_items: int = 0
    questions_without_gold: int = 0
    bad_lines: list[str] = field(default_factory=list)
    unseparated: list[str] = field(default_factory=list)  # "file:line: why" of questions skipped for their layout

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def read_json_lines(path: Path, report: ImportReport) -> list[dict]:
    rows = []
    for lineno, row, problem in iter_jsonl(path):
        if problem:
            report.bad_lines.append(f"{Path(path).name}:{lineno}: {problem}")
        else:
            rows.append(row)
    return rows


def assign_doc_ids(apis: list[dict]) -> list[str]:
    """api_name, plus a short hash of the api_call when the name repeats."""
    names = Counter(str(a.get("api_name", "")) for a in apis)
    ids = []
    for api in apis:
        name = str(api.get("api_name", "")).strip() or "api"
        ids.append(name if names[name] == 1 else f"{name}-{short_hash(str(api.get('api_call', '')))}")
    return ids


def file_name(doc_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", doc_id.replace("/", "__")) + ".md"


def as_text(value) -> str:
    if value in (None, "", [], {}, "N/A"):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_document(doc_id: str, api: dict) -> str:
    front = {"id": doc_id, "title": str(api.get("api_name", doc_id)), "attribution": ATTRIBUTION}
    details = [
        ("Domain", api.get("domain")),
        ("Framework", api.get("framework")),
        ("Functionality", api.get("functionality")),
        ("Requirements", api.get("python_environment_requirements")),
        ("Arguments", api.get("api_arguments")),
        ("Performance", api.get("performance")),
    ]
    lines = [
        f"# {front['title']}",
        "",
        as_text(api.get("description")) or "No description.",
        "",
        "## API call",
        "",
        f"`{as_text(api.get('api_call'))}`",
        "",
        "## Details",
        "",
    ]
    lines += [f"- {label}: {as_text(value)}" for label, value in details if as_text(value)]
    example = as_text(api.get("example_code"))
    if example:
        lines += ["", "## Example", "", "```python", example.strip(), "```"]
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + "\n".join(lines) + "\n"


UNSEPARATED = "no ###Instruction: marker: the question cannot be told apart from its answer"


def split_instruction(code: str) -> tuple[str, str] | None:
    """'###Instruction: Q\\n###Output: A' -> (Q, A) ("### Instruction:" too; A may be missing); None when the
    layout is not that, never the whole field as the question."""
    match = re.search(r"###\s*Instruction:\s*(.*?)\s*(?:###\s*Output:\s*(.*))?\Z", code, flags=re.DOTALL)
    if not match or not match.group(1).strip():
        return None
    return match.group(1).strip(), (match.group(2) or "").strip()


def output_fields(output: str) -> dict[str, str]:
    """APIBench's '<<<api_call>>>: ... <<<explanation>>>: ...' output, split into its fields."""
    parts = re.split(r"<<<(\w+)>>>:", output)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def concise_answer(output: str, identifier: str, max_chars: int = 320) -> str:
    """The API call plus the one explanation step that says what the model does.

    APIBench's full outputs (about 1,200 characters, with code) would make every
    training example and every generated answer several times longer on CPU; the
    call and one sentence carry what an assistant must get right.
    """
    fields = output_fields(output)
    call = identifier or fields.get("api_call", "")
    steps = [s.strip() for s in re.split(r"\s*\d+\.\s+", fields.get("explanation", "")) if s.strip()]
    model = re.search(r"['\"]([\w\-.]+/[\w\-.]+)['\"]", call)
    useful = [s for s in steps if not s.lower().startswith(("import", "we import", "first, import"))]
    pick = next((s for s in useful if model and model.group(1) in s), useful[0] if useful else "")
    answer = f"Use {call}. {pick}".strip() if call else pick or output.strip()
    return answer if len(answer) <= max_chars else answer[: max_chars - 3].rsplit(" ", 1)[0] + "..."


def find_gold(question: dict, by_pair: dict, by_name: dict, by_call: dict) -> str | None:
    data = question.get("api_data") or {}
    name, call = str(data.get("api_name", "")), str(question.get("api_call") or data.get("api_call", ""))
    return by_pair.get((name, call)) or by_call.get(call) or by_name.get(name)


def import_apibench(
    api_file: Path, questions_file: Path, out: Path, eval_fraction: float = 0.2, seed: int = 0, max_docs: int | None = None
) -> ImportReport:
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"--eval-fraction must be within [0, 1], got {eval_fraction}")
    report = ImportReport()
    apis = read_json_lines(api_file, report)
    if not apis:
        raise ValueError(f"no API entries in {api_file}")
    ids = assign_doc_ids(apis)
    if max_docs is not None and max_docs < len(apis):
        keep = sorted(random.Random(seed).sample(range(len(apis)), max_docs))
        apis, ids = [apis[i] for i in keep], [ids[i] for i in keep]

    questions = read_json_lines(questions_file, report)
    parsed = []
    for n, q in enumerate(questions):
        split = split_instruction(str(q.get("code", "")))
        if split is None:
            report.unseparated.append(f"{Path(questions_file).name}:{n + 1}: {UNSEPARATED}")
        parsed.append((n, q, split))
    if questions and len(report.unseparated) > len(questions) / 2:
        raise ValueError(
            f"{len(report.unseparated)} of {len(questions)} questions in {questions_file} have {UNSEPARATED} "
            f"(first: {report.unseparated[0]}); this is not the APIBench layout the importer reads, nothing was written"
        )

    docs_dir = Path(out) / "docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for doc_id, api in zip(ids, apis):
        name = file_name(doc_id)
        if name in used:  # two ids that differ only in characters a file name cannot hold
            name = name[:-3] + f"-{short_hash(doc_id)}.md"
        used.add(name)
        (docs_dir / name).write_text(render_document(doc_id, api), encoding="utf-8")
    report.documents = len(apis)

    by_pair = {(str(a.get("api_name", "")), str(a.get("api_call", ""))): i for i, a in zip(ids, apis)}
    by_name: dict[str, str] = {}
    by_call: dict[str, str] = {}
    for doc_id, api in zip(ids, apis):
        by_name.setdefault(str(api.get("api_name", "")), doc_id)
        by_call.setdefault(str(api.get("api_call", "")), doc_id)

    items = []
    for n, q, split in parsed:
        if split is None:
            continue
        question, output = split
        gold = find_gold(q, by_pair, by_name, by_call)
        if gold is None:
            report.questions_without_gold += 1
            continue
        identifier = str(q.get("api_call", ""))
        items.append(
            {"n": n, "question": question, "answer": concise_answer(output, identifier), "gold": gold, "identifier": identifier}
        )

    random.Random(seed).shuffle(items)
    n_eval = round(len(items) * eval_fraction)
    write_jsonl(Path(out) / "eval.jsonl", [eval_item(it) for it in items[:n_eval]])
    write_jsonl(Path(out) / "interactions.jsonl", [interaction(it) for it in items[n_eval:]])
    report.eval_items, report.interactions = n_eval, len(items) - n_eval
    return report


def item_id(item: dict) -> str:
    return "apibench-" + short_hash(f"{item['n']}\x1f{item['question']}", 12)


def eval_item(item: dict) -> dict:
    return {
        "id": item_id(item),
        "question": item["question"],
        "reference_answer": item["answer"],
        "gold_doc_ids": [item["gold"]],
        "answerable": True,
        "identifier": item["identifier"],
    }


def interaction(item: dict) -> dict:
    return {
        "id": item_id(item),
        "ts": (IMPORT_EPOCH + timedelta(minutes=item["n"])).isoformat(),
        "user": "apibench",
        "question": item["question"],
        "answer": item["answer"],
        "citations": [{"doc_id": item["gold"], "chunk_id": None}],
        "model_version": None,
        "index_version": None,
        "latency_ms": None,
        "feedback": "up",
        "correction": None,
    }
