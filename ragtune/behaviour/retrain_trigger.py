"""When is a retrain worth it? Enough new accepted interactions since the last trained version.

An interaction counts when curation would train on it (thumbs up or a correction,
user not forgotten) and the last version's RAFT dataset does not hold it yet, neither
to train on nor held out for its evaluation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ragtune import registry
from ragtune.behaviour.curation import accepted_answer
from ragtune.behaviour.datasets import raft_dir
from ragtune.jsonl import read_jsonl
from ragtune.settings import Settings


@dataclass
class RetrainTrigger:
    due: bool
    new: int  # accepted interactions not in the last version's training data
    threshold: int
    last_version: str | None
    run_key: str | None  # one run per threshold crossed since that version: the sensor never launches twice

    def reason(self) -> str:
        since = f"version {self.last_version}" if self.last_version else "the base model"
        return f"{self.new} new accepted interactions since {since} (retrain at {self.threshold})"

    def as_dict(self) -> dict:
        return {**asdict(self), "reason": self.reason()}


def trained_ids(settings: Settings, dataset_hash: str | None) -> set[str]:
    if not dataset_hash:
        return set()
    folder = raft_dir(settings.datasets_dir, dataset_hash)
    ids = {
        row["id"]
        for split in ("train", "validation")
        if (folder / f"{split}.jsonl").is_file()
        for row in read_jsonl(folder / f"{split}.jsonl")
    }
    meta = folder / "meta.json"
    held_out = json.loads(meta.read_text()).get("held_out_ids", []) if meta.is_file() else []
    return ids | set(held_out)  # held out for evaluation: already used, never "new" again


def check_volume(settings: Settings, records: list[dict], forgotten: set[str]) -> RetrainTrigger:
    versions = registry.list_versions(settings.tracking_uri, settings.registered_model)
    last = versions[0] if versions else None
    seen = trained_ids(settings, last["tags"].get("dataset_hash") if last else None)
    new = sum(1 for r in records if r["user"] not in forgotten and r["id"] not in seen and accepted_answer(r)[0])
    threshold = settings.retrain_min_interactions
    due = new >= threshold
    key = f"curated-volume-after-{last['version'] if last else 'base'}-{new // threshold}" if due else None
    return RetrainTrigger(due=due, new=new, threshold=threshold, last_version=last["version"] if last else None, run_key=key)
