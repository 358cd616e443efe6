"""`ragtune index purge`: a document removed for good, from the index and from everything learned from it.

A legal request or a leaked secret needs more than a delete. This removes the documents from every table
and every retained version of the index (knowledge/purge_index.py), drops every row that names them from
the RAFT datasets, the embedder's training pairs, the curated snapshot and the evaluation artifacts in the
data home, flags the adapter and embedder versions trained on data that held them (`needs_retrain`, owed
when the registry is down), and records what, when, why and by whom in the index history.

Every step can be repeated, so a purge killed midway is completed by running it again. The interaction
log is left as it is: a logged answer that quoted the document is the user's data, erased with
`ragtune forget`; curation reads the log afresh and the next RAFT build cannot retrieve the document.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.behaviour.datasets import EMBEDDER_PREFIX, RAFT_PREFIX, drop_rows, mentions
from ragtune.behaviour.owed_flags import owe_and_pay
from ragtune.jsonl import read_jsonl, write_jsonl
from ragtune.knowledge.indexing import record_history
from ragtune.knowledge.purge_index import purge_index, remember_purged
from ragtune.registry import failpoint
from ragtune.settings import Settings

REASON = "trained on data that held a purged document"


def evaluation_files(settings: Settings) -> list[Path]:
    """Evaluation artifacts kept in the data home: cached answers, and per-item rows in a local MLflow store."""
    cached = sorted(settings.evaluations_dir.glob("*.jsonl")) if settings.evaluations_dir.is_dir() else []
    logged = sorted(settings.mlflow_artifacts.glob("**/evaluation/*.jsonl")) if settings.mlflow_artifacts.is_dir() else []
    return cached + logged


def drop_from_files(paths: list[Path], doc_ids: set[str]) -> dict[str, int]:
    """Rows naming one of `doc_ids` removed from each JSONL file; path -> rows removed (files touched only)."""
    removed = {}
    for path in paths:
        rows = read_jsonl(path)
        kept = [r for r in rows if not mentions(r, doc_ids)]
        if len(kept) != len(rows):
            write_jsonl(path, kept)
            removed[str(path)] = len(rows) - len(kept)
    return removed


def purge_documents(settings: Settings, doc_ids: list[str], reason: str, by: str) -> dict:
    ids = sorted({d.strip() for d in doc_ids if d and d.strip()})
    if not ids:
        raise ValueError("name the documents to purge: --doc ID (as `ragtune search` shows them)")
    if not reason.strip():
        raise ValueError("--reason must say why the documents are purged: it goes in the audit log")
    remember_purged(settings, ids, reason, by)  # first: from here on no refresh brings them back
    tables = purge_index(settings, ids)
    failpoint("purge:after_index")
    named = set(ids)
    raft = drop_rows(settings.datasets_dir, lambda row: mentions(row, named), RAFT_PREFIX)
    pairs = drop_rows(settings.datasets_dir, lambda row: mentions(row, named), EMBEDDER_PREFIX)
    evaluations = drop_from_files(evaluation_files(settings), named)
    flags = owe_and_pay(
        settings,
        {
            settings.registered_model: dict.fromkeys(raft["datasets"], REASON),
            settings.registered_embedder: dict.fromkeys(pairs["datasets"], REASON),
        },
    )
    entry = record_history(
        settings.index_history,
        "purge",
        doc_ids=ids,
        reason=reason,
        by=by,
        tables=tables,
        rows_deleted=sum(t["rows_deleted"] for t in tables),
        curated_removed=raft["curated_removed"],
        datasets=sorted(raft["datasets"]),
        embedder_datasets=sorted(pairs["datasets"]),
        evaluation_rows_removed=sum(evaluations.values()),
        versions_flagged=flags["flagged"].get(settings.registered_model, []),
        embedder_versions_flagged=flags["flagged"].get(settings.registered_embedder, []),
    )
    return {**entry, "unflagged": flags["unflagged"]}
