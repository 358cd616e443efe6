"""The command line as a user runs it: real processes, a temporary data home, --json reports."""

import json
import os
import subprocess
import sys

import pytest
from conftest import DEMO


def ragtune(home, *args, check=True, timeout=300, **env_extra):
    env = {**os.environ, "RAGTUNE_HOME": str(home), **env_extra}
    proc = subprocess.run([sys.executable, "-m", "ragtune.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_help_explains_every_command(tmp_path):
    out = ragtune(tmp_path, "--help").stdout
    for command in (
        "demo",
        "import-apibench",
        "refresh",
        "search",
        "index",
        "logs",
        "curate",
        "forget",
        "models",
        "retrain",
        "eval",
        "ui",
    ):
        assert command in out
    assert "--source" in ragtune(tmp_path, "refresh", "--help").stdout


def test_clear_errors_for_missing_inputs(tmp_path):
    """Bad input exits 2 with one line naming the problem; a state that stops the work (no index yet) exits 1."""
    missing = ragtune(tmp_path, "refresh", "--source", str(tmp_path / "nope"), "--json", check=False)
    assert missing.returncode == 2 and "does not exist" in json.loads(missing.stdout)["error"]
    no_index = ragtune(tmp_path, "search", "anything", "--json", check=False)
    assert no_index.returncode == 1 and "no index" in json.loads(no_index.stdout)["error"]
    empty = ragtune(tmp_path, "search", "   ", check=False)
    assert empty.returncode == 2 and empty.stderr.strip() == "error: the query is empty: give the words to search for"
    no_set = ragtune(tmp_path, "eval", "--set", str(tmp_path / "missing.jsonl"), "--json", check=False)
    assert no_set.returncode == 2 and "evaluation set not found" in json.loads(no_set.stdout)["error"]
    no_file = ragtune(
        tmp_path, "import-apibench", "--api", "x.jsonl", "--questions", "y.json", "--out", str(tmp_path), check=False
    )
    assert no_file.returncode == 2 and "--api file not found" in no_file.stderr
    for result in (missing, no_index, empty, no_set, no_file):
        assert "Traceback" not in result.stderr + result.stdout


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_trace(tmp_path):
    home = tmp_path / "not-a-folder"
    home.write_text("a file where the data home should be")
    plain = ragtune(home, "index", "status", "--json", check=False)
    error = json.loads(plain.stdout)["error"]
    assert plain.returncode in (1, 2) and "Traceback" not in plain.stderr and "\n" not in error and error
    verbose = ragtune(home, "--verbose", "index", "status", check=False)
    assert verbose.returncode == plain.returncode and "Traceback (most recent call last)" in verbose.stderr


@pytest.mark.integration
def test_refresh_search_and_rollback_from_the_cli(tmp_path):
    home, src = tmp_path / "home", tmp_path / "src"
    src.mkdir()
    for path in sorted((DEMO / "docs").glob("*.md"))[:15]:
        (src / path.name).write_bytes(path.read_bytes())
    (src / "broken.jsonl").write_text('{"id": "j1", "title": "Kept", "text": "a good line"}\n{oops\n')
    (src / "blob.md").write_bytes(b"\x00\x01\x02binary")

    first = json.loads(ragtune(home, "refresh", "--source", str(src), "--json").stdout)
    assert first["ok"] and first["docs_added"] == 16 and first["chunks_embedded"] == first["chunks_total"] > 0
    reasons = {s["path"]: s["reason"] for s in first["skipped"]}
    assert "malformed JSON" in reasons["broken.jsonl:2"] and "binary" in reasons["blob.md"]

    (src / "broken.jsonl").unlink()
    second = json.loads(ragtune(home, "refresh", "--source", str(src), "--json").stdout)
    assert second["docs_deleted"] == 1 and second["chunks_embedded"] == 0 and second["chunks_deleted"] >= 1

    hits = json.loads(ragtune(home, "search", "a good line", "--k", "3", "--json").stdout)["hits"]
    assert "j1" not in [h["doc_id"] for h in hits]
    back = json.loads(ragtune(home, "index", "rollback", "--reason", "bad deploy", "--json").stdout)
    assert back["restored_from"] == first["index_version"]
    hits = json.loads(ragtune(home, "search", "a good line", "--k", "3", "--json").stdout)["hits"]
    assert hits[0]["doc_id"] == "j1" and set(hits[0]) == {"doc_id", "chunk_id", "title", "text", "score", "similarity"}
    history = json.loads(ragtune(home, "index", "history", "--json").stdout)["history"]
    assert [h["action"] for h in history] == ["refresh", "refresh", "rollback"] and history[-1]["reason"] == "bad deploy"
    status = json.loads(ragtune(home, "index", "status", "--json").stdout)
    assert status["documents"] == 16 and any(ix.startswith("FTS") for ix in status["indexes"])


@pytest.mark.integration
def test_demo_runs_the_whole_loop_on_the_bundled_data(tmp_path, base_model):
    proc = ragtune(
        tmp_path / "home",
        "demo",
        "--train-steps",
        "1",
        "--eval-limit",
        "1",
        "--probe-limit",
        "1",
        "--max-new-tokens",
        "24",
        "--json",
        timeout=900,
        RAGTUNE_BASE_MODEL=base_model,
    )
    summary = json.loads(proc.stdout)
    assert summary["ok"] and summary["data"] == {"documents": 150, "interactions": 139, "eval_items": 35}
    assert summary["refresh"]["docs_added"] == 150 and summary["refresh"]["skipped"] == []
    assert summary["retrieval"]["questions"] == 35 and 0.0 < summary["retrieval"]["recall@5"] <= 1.0
    assert summary["interactions_imported"] == 139
    retrain = summary["retrain"]
    held_out = retrain["evaluation_set"]
    assert held_out["source"] == "held-out" and held_out["items"] >= 30 and held_out["skipped"] == 0
    assert retrain["curation"]["kept"] == 139  # the held-out interactions are never trained on:
    assert retrain["raft"]["train"] + retrain["raft"]["validation"] == 139 - held_out["held_out_from_training"]
    assert retrain["adapter"]["model_version"] == "1" and retrain["adapter"]["steps"] == 1
    evaluation = retrain["evaluation"]
    assert set(evaluation["metrics"]) == {"base_rag", "challenger_rag", "challenger_no_rag"} and evaluation["items"] == 1
    assert evaluation["incumbent"] == "base_rag" and evaluation["challenger"] == "1"
    assert all(m["tokens_mean"] <= 24 for m in evaluation["metrics"].values())
    # one step with a warm-up of one step leaves the adapter at zero: it cannot beat the base model
    assert retrain["verdict"]["passed"] is False and not retrain["released"]
    assert retrain["verdict"]["outcome"] == "not_enough_evidence"  # one item judged: no decision either way
    assert retrain["verdict"]["reasons"][0].startswith("FAIL identifier_match")
    assert retrain["aliases"] == {"challenger": "1"}
    models = json.loads(ragtune(tmp_path / "home", "models", "list", "--json").stdout)
    assert [v["version"] for v in models["versions"]] == ["1"]
    tags = models["versions"][0]["tags"]
    assert tags["gate_verdict"] == "rejected" and "eval_identifier_match" in tags and tags["evaluated_against"] == "base"
