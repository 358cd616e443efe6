"""Flags the registry owes: versions trained on data that has since been erased (a forgotten user, a purged
document) are tagged `needs_retrain`, and a tag that could not be written yet is owed, never lost.

The data goes first, the flags second. What is owed is written to a ledger (`flags_owed.json` in the data
home) before the registry is asked, and leaves it only once the registry took it: when MLflow cannot be
reached, the erasure still happens, the command says which flags are owed, and the next erasure (or a
rerun of the same one) pays them.
"""

from __future__ import annotations

import json

from ragtune.locks import exclusive_lock
from ragtune.registry import RegistryUnavailable, mark_needs_retrain
from ragtune.settings import Settings


def ledger_path(settings: Settings):
    return settings.home_dir / "flags_owed.json"


def read_owed(settings: Settings) -> dict[str, dict[str, str]]:
    """registered model -> {dataset hash: why its versions need retraining}."""
    path = ledger_path(settings)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_owed(settings: Settings, owed: dict[str, dict[str, str]]) -> None:
    path = ledger_path(settings)
    owed = {model: hashes for model, hashes in owed.items() if hashes}
    if not owed:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(owed, indent=1, sort_keys=True))
    partial.replace(path)


def owe_and_pay(settings: Settings, new: dict[str, dict[str, str]]) -> dict:
    """Add `new` (model -> {dataset hash: reason}) to what is owed, then flag every owed version the registry
    can take now. Returns {"flagged": {model: [versions]}, "unflagged": {model: {"datasets", "error"}}}."""
    with exclusive_lock(ledger_path(settings).with_suffix(".lock")):
        owed = read_owed(settings)
        for model, hashes in new.items():
            owed.setdefault(model, {}).update(hashes)
        write_owed(settings, owed)  # owed before asked: a crash or a registry outage loses no flag
        flagged: dict[str, list[str]] = {}
        unflagged: dict[str, dict] = {}
        for model, hashes in list(owed.items()):
            try:
                flagged[model] = []
                for reason in sorted(set(hashes.values())):
                    chosen = {h for h, r in hashes.items() if r == reason}
                    flagged[model] += mark_needs_retrain(settings.tracking_uri, model, chosen, reason)
            except RegistryUnavailable as exc:
                unflagged[model] = {"datasets": sorted(hashes), "error": str(exc)}
                continue
            owed[model] = {}
            write_owed(settings, owed)
    return {"flagged": flagged, "unflagged": unflagged}
