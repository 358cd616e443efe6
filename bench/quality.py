"""Answer quality: base model + RAG against the trained adapter + RAG, through the real adapter_retrain job.

The APIBench HuggingFace split goes through the project's importer (a random subset of --docs
documents, 20% of their questions held out), the index is refreshed, the training share is imported
as accepted interactions, and `adapter_retrain` runs as `ragtune retrain` does: curation, RAFT
dataset, LoRA training (training/configs/default.yaml, stopped at --train-minutes), evaluation of
base + RAG, adapter + RAG and the adapter without retrieval on --eval-items held-out questions
(--probe-items of them also probed for abstention and counterfactual adherence), the gate, the
release. Everything is measured in the same run.

Targets (2 CPU cores, at most 15 minutes of training): adapter + RAG >= base + RAG + 0.15 on
identifier match, format validity >= 0.95.

    python bench/quality.py [--docs 300] [--train-minutes 15] [--eval-items 20] [--probe-items 10]
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from common import APIBENCH, ROOT, timer, write_result

TARGET_GAIN = 0.15
TARGET_FORMAT = 0.95
METRICS = ("identifier_match", "exact_match", "token_f1", "format_validity", "citation_accuracy", "abstention", "adherence",
           "false_abstention", "latency_p50_ms", "latency_p95_ms", "tokens_mean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="APIBench documents sampled (seed 0)")
    parser.add_argument("--train-minutes", type=float, default=15.0)
    parser.add_argument("--max-steps", type=int, default=None, help="override the training YAML's max_steps")
    parser.add_argument("--training-config", default=str(ROOT / "training" / "configs" / "default.yaml"))
    parser.add_argument("--eval-items", type=int, default=20)
    parser.add_argument("--probe-items", type=int, default=10)
    parser.add_argument("--name", default="quality", help="result file name (bench/results/NAME.json)")
    parser.add_argument("--keep", default=None, help="data home to use and keep (default: a temporary one)")
    args = parser.parse_args()

    from ragtune.apibench import import_apibench
    from ragtune.cli import refresh
    from ragtune.interactions import InteractionLog
    from ragtune.release_commands import retrain, retrain_run_config
    from ragtune.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(args.keep or tmp)
        os.environ["RAGTUNE_HOME"] = str(home)
        data = home / "apibench"
        imported = import_apibench(APIBENCH / "huggingface_api.jsonl", APIBENCH / "huggingface_eval.json", data,
                                   eval_fraction=0.2, seed=0, max_docs=args.docs).as_dict()
        settings = load_settings()
        with timer() as t_refresh:
            outcome = refresh(settings, str(data / "docs"), allow_empty=False, verbose=False)
        if not outcome.success:
            raise SystemExit(f"refresh failed: {outcome.error}")
        InteractionLog(settings.interactions_db).import_jsonl(data / "interactions.jsonl")
        config = retrain_run_config(args.training_config, args.max_steps, str(data / "eval.jsonl"), args.eval_items,
                                    args.probe_items, max_minutes=args.train_minutes)
        with timer() as t_retrain:
            report = retrain(settings, config)
    if not report["ok"] or "evaluation" not in report:
        raise SystemExit(f"adapter_retrain failed: {report.get('error')}")
    metrics = report["evaluation"]["metrics"]
    base, adapter = metrics["base_rag"], metrics["challenger_rag"]
    gain = adapter["identifier_match"] - base["identifier_match"]
    training_minutes = report["adapter"]["train_seconds"] / 60
    result = {
        "corpus": {"documents": imported["documents"], "interactions": imported["interactions"], "eval_items": imported["eval_items"]},
        "evaluated": {"items": report["evaluation"]["items"], "probe_items": args.probe_items},
        "retrieval": report["evaluation"]["retrieval"],
        "training": {"steps": report["adapter"]["steps"], "minutes": round(training_minutes, 2), "train_loss": report["adapter"]["train_loss"],
                     "tokens_per_second": report["adapter"]["tokens_per_second"], "curated": report["curation"]["kept"]},
        "base_rag": {m: base.get(m) for m in METRICS},
        "adapter_rag": {m: adapter.get(m) for m in METRICS},
        "adapter_no_rag": {m: metrics["challenger_no_rag"].get(m) for m in METRICS},
        "identifier_match_gain": round(gain, 4),
        "verdict": report.get("verdict"), "released": report["released"],
        "targets": {"identifier_match_gain": TARGET_GAIN, "format_validity": TARGET_FORMAT, "training_minutes": 15},
        "met": {"identifier_match_gain": gain >= TARGET_GAIN, "format_validity": adapter["format_validity"] >= TARGET_FORMAT,
                "training_minutes": training_minutes <= 15},
        "seconds": {"refresh": round(t_refresh.seconds, 1), "retrain_job": round(t_retrain.seconds, 1)},
    }
    write_result(args.name, result)


if __name__ == "__main__":
    main()
