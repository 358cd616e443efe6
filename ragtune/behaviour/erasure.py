"""Erase one user: from the interaction log, from curated data, and flag the adapters and embedders trained on them.

Adapter weights cannot un-learn a record, so every version whose training set
held the user's data is tagged `needs_retrain`; the next retrain (which reads
the log without them) replaces it, and `ragtune models list` shows the flag.

The data goes first, the flags second. The datasets that held the user are written to a ledger
(`erasure_pending.json` in the data home) before the registry is asked, and leave it only once
flagged: when the registry cannot be reached, the data is still gone, the command says which
flags are owed, and the next `ragtune forget` (of anyone) pays them.
"""

from __future__ import annotations

import json

from ragtune.behaviour.datasets import EMBEDDER_PREFIX, forget_user
from ragtune.behaviour.interactions import InteractionLog
from ragtune.locks import exclusive_lock
from ragtune.registry import RegistryUnavailable, mark_needs_retrain
from ragtune.settings import Settings

REASON = "trained on data of a user who asked to be forgotten"


def ledger_path(settings: Settings):
    return settings.home_dir / "erasure_pending.json"


def read_ledger(settings: Settings) -> dict[str, list[str]]:
    """registered model -> dataset hashes whose versions still owe a needs_retrain flag."""
    path = ledger_path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_ledger(settings: Settings, pending: dict[str, list[str]]) -> None:
    path = ledger_path(settings)
    pending = {model: sorted(set(hashes)) for model, hashes in pending.items() if hashes}
    if not pending:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pending, indent=1))
    tmp.replace(path)


def forget(settings: Settings, user: str) -> dict:
    """Erase `user`, then flag every version trained on their data; `unflagged` names what the registry still owes."""
    if not user.strip():
        raise ValueError("--user must not be empty")
    removed = InteractionLog(settings.interactions_db).forget(user)
    with exclusive_lock(ledger_path(settings).with_suffix(".lock")):
        datasets = forget_user(settings.datasets_dir, user)
        pairs = forget_user(settings.datasets_dir, user, EMBEDDER_PREFIX)
        pending = read_ledger(settings)
        for model, touched in ((settings.registered_model, datasets), (settings.registered_embedder, pairs)):
            pending[model] = [*pending.get(model, []), *touched["datasets"]]
        write_ledger(settings, pending)  # owed before asked: a crash or a registry outage loses no flag
        flagged: dict[str, list[str]] = {}
        unflagged: dict[str, str] = {}
        for model, hashes in list(pending.items()):
            try:
                flagged[model] = mark_needs_retrain(settings.tracking_uri, model, set(hashes), REASON) if hashes else []
            except RegistryUnavailable as exc:
                unflagged[model] = str(exc)
                continue
            pending[model] = []
            write_ledger(settings, pending)
    return {
        "user": user,
        "interactions_removed": removed,
        "curated_removed": datasets["curated_removed"],
        "dataset_rows_removed": sum(datasets["datasets"].values()),
        "datasets": sorted(datasets["datasets"]),
        "versions_flagged": flagged.get(settings.registered_model, []),
        "embedder_versions_flagged": flagged.get(settings.registered_embedder, []),
        "unflagged": {model: {"datasets": sorted(set(pending[model])), "error": error} for model, error in unflagged.items()},
    }
