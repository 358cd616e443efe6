"""`ragtune index purge`: a document gone from every table and version, from training and evaluation data, flagged
in the registry, recorded in the audit log, kept out of later refreshes, and completed by a rerun after a SIGKILL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import register_versions, run_cli

from ragtune.behaviour.datasets import save_embedder_pairs, save_raft
from ragtune.jsonl import read_jsonl, write_jsonl
from ragtune.knowledge.live_index import live_store
from ragtune.registry import list_versions
from ragtune.settings import load_settings

pytestmark = pytest.mark.integration

SECRET = "QUARTZ-HERON-5521"
LEAKED = f"""---
id: leaked-secret
title: Vault access for the model registry
---
# Vault access for the model registry

The registry vault passphrase is {SECRET}. Paste it into the vault login page to download signed model weights.
"""


def files_holding(settings, doc_id: str) -> set[Path]:
    """The data files, over every table and retained version, of the fragments that hold rows of `doc_id`."""
    store = live_store(settings)
    files = set()
    for name in store.db.table_names():
        table = store.db.open_table(name)
        for version in [v["version"] for v in table.list_versions()]:
            table.checkout(version)
            dataset = table.to_lance()
            for fragment in dataset.get_fragments():
                if fragment.count_rows(f"doc_id = '{doc_id}'"):
                    files |= {Path(dataset.uri) / "data" / f.path for f in fragment.data_files()}
    return files


def tables_hold(settings, doc_id: str) -> list[tuple[str, int]]:
    """(table, version) pairs, over every table and every retained version, that return `doc_id`."""
    store = live_store(settings)
    found = []
    for name in store.db.table_names():
        table = store.db.open_table(name)
        for version in [v["version"] for v in table.list_versions()]:
            table.checkout(version)
            if table.count_rows(f"doc_id = '{doc_id}'"):
                found.append((name, version))
    return found


def test_purge_removes_a_document_for_good(home, corpus, tmp_path, capsys):
    (corpus / "leaked.md").write_text(LEAKED)
    assert run_cli(capsys, "refresh", "--source", str(corpus))["exit"] == 0
    (corpus / sorted(os.listdir(corpus))[0]).write_text("---\nid: edited\ntitle: Edited\n---\nAn edited document.\n")
    assert run_cli(capsys, "refresh", "--source", str(corpus))["exit"] == 0  # a second version: a rollback point
    s = load_settings()
    before = live_store(s).version()
    held = files_holding(s, "leaked-secret")
    assert tables_hold(s, "leaked-secret") and held and all(f.is_file() for f in held)  # the control

    # what was learned from it: a RAFT dataset (and the version trained on it), embedder pairs, evaluation rows
    save_raft(
        s.datasets_dir,
        "with-leak",
        {"train": [{"id": "a", "gold_doc_ids": ["leaked-secret"], "distractor_doc_ids": []}, {"id": "b", "gold_doc_ids": ["x"]}]},
        {},
    )
    save_raft(s.datasets_dir, "clean", {"train": [{"id": "c", "gold_doc_ids": ["x"], "distractor_doc_ids": ["y"]}]}, {})
    pairs = save_embedder_pairs(s.datasets_dir, [{"anchor": "q", "positive": SECRET, "doc_ids": ["leaked-secret", "x"]}])
    v_leak, v_clean = register_versions(s, ["with-leak", "clean"], tmp_path / "adapter")
    write_jsonl(s.evaluations_dir / "cache.jsonl", [{"item_id": "1", "retrieved": ["leaked-secret"]}, {"item_id": "2"}])

    purged = run_cli(capsys, "index", "purge", "--doc", "leaked-secret", "--reason", "leaked secret", "--by", "sec-team")
    assert purged["exit"] == 0 and purged["rows_deleted"] >= 1 and purged["versions_flagged"] == [v_leak]
    assert purged["datasets"] == ["with-leak"] and purged["embedder_datasets"] == [pairs]
    assert tables_hold(s, "leaked-secret") == [] and not any(f.exists() for f in held)  # no version, no file holds it
    assert [r["id"] for r in read_jsonl(s.datasets_dir / "raft-with-leak" / "train.jsonl")] == ["b"]
    assert read_jsonl(s.datasets_dir / f"embedder-{pairs}" / "train.jsonl") == []
    assert [r["item_id"] for r in read_jsonl(s.evaluations_dir / "cache.jsonl")] == ["2"]
    tags = {v["version"]: v["tags"] for v in list_versions(s.tracking_uri, s.registered_model)}
    assert tags[v_leak].get("needs_retrain") == "true" and "needs_retrain" not in tags[v_clean]

    hits = run_cli(capsys, "search", "registry vault passphrase", "--k", "5")
    assert hits["exit"] == 0 and all(h["doc_id"] != "leaked-secret" for h in hits["hits"])
    for argv in (["index", "rollback"], ["index", "rollback", "--to", str(before)]):  # the old versions are gone
        rolled = run_cli(capsys, *argv)
        assert rolled["exit"] == 2 and "gone: the purge" in rolled["error"], rolled
    (entry,) = [e for e in run_cli(capsys, "index", "history")["history"] if e["action"] == "purge"]
    assert (entry["doc_ids"], entry["reason"], entry["by"]) == (["leaked-secret"], "leaked secret", "sec-team")

    # the file is still in the source: the nightly refresh skips it, saying why
    again = run_cli(capsys, "refresh", "--source", str(corpus))
    assert again["exit"] == 0 and tables_hold(s, "leaked-secret") == []
    assert any(k["path"] == "leaked.md" and "purged on" in k["reason"] for k in again["skipped"]), again["skipped"]


def test_a_purge_killed_midway_is_completed_by_a_rerun(home, corpus, tmp_path, capsys):
    (corpus / "leaked.md").write_text(LEAKED)
    assert run_cli(capsys, "refresh", "--source", str(corpus))["exit"] == 0
    s = load_settings()
    save_raft(s.datasets_dir, "with-leak", {"train": [{"id": "a", "gold_doc_ids": ["leaked-secret"]}]}, {})
    argv = [sys.executable, "-m", "ragtune.cli", "index", "purge", "--doc", "leaked-secret", "--reason", "leak", "--json"]
    env = {**os.environ, "RAGTUNE_FAILPOINT": "purge:after_index", "RAGTUNE_FAILPOINT_KILL": "1"}
    killed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: the index purged, the data home not yet
    assert tables_hold(s, "leaked-secret") == [] and read_jsonl(s.datasets_dir / "raft-with-leak" / "train.jsonl")
    assert not [e for e in run_cli(capsys, "index", "history")["history"] if e["action"] == "purge"]

    rerun = run_cli(capsys, "index", "purge", "--doc", "leaked-secret", "--reason", "leak")
    assert rerun["exit"] == 0 and rerun["datasets"] == ["with-leak"]
    assert read_jsonl(s.datasets_dir / "raft-with-leak" / "train.jsonl") == []
    assert json.loads((s.home_dir / "index" / "purged_documents.json").read_text())["leaked-secret"]["reason"] == "leak"
