"""Erase one user: from the interaction log, from curated data, and flag the adapters and embedders trained on them.

Adapter weights cannot un-learn a record, so every version whose training set
held the user's data is tagged `needs_retrain`; the next retrain (which reads
the log without them) replaces it, and `ragtune models list` shows the flag.
"""

from __future__ import annotations

from ragtune.behaviour.datasets import EMBEDDER_PREFIX, forget_user
from ragtune.behaviour.interactions import InteractionLog
from ragtune.registry import mark_needs_retrain
from ragtune.settings import Settings


def forget(settings: Settings, user: str) -> dict:
    if not user.strip():
        raise ValueError("--user must not be empty")
    removed = InteractionLog(settings.interactions_db).forget(user)
    datasets = forget_user(settings.datasets_dir, user)
    pairs = forget_user(settings.datasets_dir, user, EMBEDDER_PREFIX)
    reason = "trained on data of a user who asked to be forgotten"
    versions = (
        mark_needs_retrain(settings.tracking_uri, settings.registered_model, set(datasets["datasets"]), reason)
        if datasets["datasets"]
        else []
    )
    embedders = (
        mark_needs_retrain(settings.tracking_uri, settings.registered_embedder, set(pairs["datasets"]), reason)
        if pairs["datasets"]
        else []
    )
    return {
        "user": user,
        "interactions_removed": removed,
        "curated_removed": datasets["curated_removed"],
        "dataset_rows_removed": sum(datasets["datasets"].values()),
        "datasets": sorted(datasets["datasets"]),
        "versions_flagged": versions,
        "embedder_versions_flagged": embedders,
    }
