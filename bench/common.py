"""Shared helpers for the benchmarks: the APIBench corpus, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
APIBENCH = Path(os.environ.get("RAGTUNE_APIBENCH", ROOT.parent / "shared" / "data" / "apibench"))
RESULTS = ROOT / "bench" / "results"
SPLITS = {  # APIBench split -> (API documents, questions)
    "huggingface": ("huggingface_api.jsonl", "huggingface_eval.json"),
    "tensorflow": ("tensorflowhub_api.jsonl", "tensorflow_eval.json"),
}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}"


def import_corpus(out: Path) -> dict:
    """The HuggingFace part of APIBench, through the project's importer."""
    from ragtune.cli.apibench import import_apibench

    if not APIBENCH.exists():
        raise SystemExit(f"APIBench data not found at {APIBENCH} (set RAGTUNE_APIBENCH)")
    return import_apibench(
        APIBENCH / "huggingface_api.jsonl", APIBENCH / "huggingface_eval.json", out, eval_fraction=1.0, seed=0
    ).as_dict()


class timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def write_result(name: str, result: dict) -> None:
    result = {"benchmark": name, "machine": machine(), **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


def adapter_version(settings, ref: str) -> tuple[str, str]:
    """The registry version behind `ref` (a version, an alias, or "latest") in a benchmark's data home, and
    the MLflow run that trained it; SystemExit when there is none."""
    from ragtune import registry

    versions = registry.list_versions(settings.tracking_uri, settings.registered_model)
    if ref == "latest":
        version = versions[0]["version"] if versions else None
    else:
        version = registry.resolve(settings.tracking_uri, settings.registered_model, ref)
    run_id = next((v["run_id"] for v in versions if v["version"] == version), None)
    if run_id is None:
        raise SystemExit(f"no adapter behind {ref!r} in {settings.home}")
    return version, run_id
