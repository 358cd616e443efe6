"""Erase one user: from the interaction log, from curated data, and flag the adapters and embedders trained on them.

Adapter weights cannot un-learn a record, so every version whose training set
held the user's data is tagged `needs_retrain`; the next retrain (which reads
the log without them) replaces it, and `ragtune models list` shows the flag.
The data goes first; a flag the registry cannot take now is owed (owed_flags.py).
"""

from __future__ import annotations

from ragtune.behaviour.datasets import EMBEDDER_PREFIX, forget_user
from ragtune.behaviour.interactions import InteractionLog
from ragtune.behaviour.owed_flags import owe_and_pay
from ragtune.settings import Settings

REASON = "trained on data of a user who asked to be forgotten"


def forget(settings: Settings, user: str) -> dict:
    """Erase `user`, then flag every version trained on their data; `unflagged` names what the registry still owes."""
    if not user.strip():
        raise ValueError("--user must not be empty")
    removed = InteractionLog(settings.interactions_db).forget(user)
    datasets = forget_user(settings.datasets_dir, user)
    pairs = forget_user(settings.datasets_dir, user, EMBEDDER_PREFIX)
    flags = owe_and_pay(
        settings,
        {
            settings.registered_model: dict.fromkeys(datasets["datasets"], REASON),
            settings.registered_embedder: dict.fromkeys(pairs["datasets"], REASON),
        },
    )
    return {
        "user": user,
        "interactions_removed": removed,
        "curated_removed": datasets["curated_removed"],
        "dataset_rows_removed": sum(datasets["datasets"].values()),
        "datasets": sorted(datasets["datasets"]),
        "versions_flagged": flags["flagged"].get(settings.registered_model, []),
        "embedder_versions_flagged": flags["flagged"].get(settings.registered_embedder, []),
        "unflagged": flags["unflagged"],
    }
