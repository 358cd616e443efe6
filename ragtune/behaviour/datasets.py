"""Curated snapshots and RAFT datasets on disk, and erasing a user from them.

    $RAGTUNE_HOME/datasets/curated.jsonl           the latest curated interactions
    $RAGTUNE_HOME/datasets/raft-<hash>/train.jsonl  one folder per RAFT dataset,
                                     validation.jsonl  named by its content hash,
                                     meta.json         which the registry tags record

Files are written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ragtune.jsonl import read_jsonl, write_jsonl

CURATED_FILE = "curated.jsonl"
RAFT_PREFIX = "raft-"
EMBEDDER_PREFIX = "embedder-"  # the (question, gold chunk, negative) pairs an embedder version was trained on
SPLITS = ("train", "validation")


def save_curated(datasets_dir: Path, records: list[dict]) -> Path:
    return write_jsonl(datasets_dir / CURATED_FILE, records)


def load_curated(datasets_dir: Path) -> list[dict]:
    return read_jsonl(datasets_dir / CURATED_FILE)


def raft_dir(datasets_dir: Path, digest: str) -> Path:
    return datasets_dir / f"{RAFT_PREFIX}{digest}"


def save_raft(datasets_dir: Path, digest: str, splits: dict[str, list[dict]], meta: dict) -> Path:
    folder = raft_dir(datasets_dir, digest)
    for name, rows in splits.items():
        write_jsonl(folder / f"{name}.jsonl", rows)
    partial = folder / f"meta.json.{os.getpid()}.partial"
    partial.write_text(json.dumps(meta, indent=2))
    partial.replace(folder / "meta.json")
    return folder


def save_embedder_pairs(datasets_dir: Path, pairs: list[dict]) -> str:
    """Keep an embedder's training pairs (with their `user`) so erasure can find them; their hash."""
    digest = hashlib.sha256(json.dumps(pairs, sort_keys=True).encode()).hexdigest()[:16]
    write_jsonl(datasets_dir / f"{EMBEDDER_PREFIX}{digest}" / "train.jsonl", pairs)
    return digest


def drop_rows(datasets_dir: Path, drop: Callable[[dict], bool], prefix: str = RAFT_PREFIX) -> dict:
    """Remove the rows `drop` selects from the curated snapshot and every dataset named `prefix`* (RAFT
    datasets, or embedder training pairs).

    Returns {"curated_removed": n, "datasets": {hash: rows removed}}: the hashes name the datasets (and so
    the adapter or embedder versions) that held the rows.
    """
    curated = load_curated(datasets_dir)
    kept = [r for r in curated if not drop(r)]
    if len(kept) != len(curated):
        save_curated(datasets_dir, kept)
    touched: dict[str, int] = {}
    for folder in sorted(datasets_dir.glob(f"{prefix}*")):
        removed = 0
        for split in SPLITS:
            rows = read_jsonl(folder / f"{split}.jsonl")
            left = [r for r in rows if not drop(r)]
            if len(left) != len(rows):
                write_jsonl(folder / f"{split}.jsonl", left)
                removed += len(rows) - len(left)
        if removed:
            touched[folder.name.removeprefix(prefix)] = removed
    return {"curated_removed": len(curated) - len(kept), "datasets": touched}


def forget_user(datasets_dir: Path, user: str, prefix: str = RAFT_PREFIX) -> dict:
    """Remove `user`'s rows (see drop_rows)."""
    return drop_rows(datasets_dir, lambda row: row.get("user") == user, prefix)


def mentions(value, doc_ids: set[str]) -> bool:
    """Whether a row names one of `doc_ids` anywhere (gold, distractor, retrieved, cited, a pair's documents)."""
    if isinstance(value, str):
        return value in doc_ids
    if isinstance(value, dict):
        return any(mentions(v, doc_ids) for v in value.values())
    if isinstance(value, list):
        return any(mentions(v, doc_ids) for v in value)
    return False
