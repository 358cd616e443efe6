"""Evaluate a benchmark's adapter again under the current evaluation rules: real generation, no retraining.

`bench/quality.py --keep HOME` runs the whole loop once (about an hour on 2 cores). When only the
evaluation's rules change (the relevance floor's transfer check, a metric), this runs the evaluation alone
on the same adapter, the same live index and the evaluation set the job built, against base + RAG, and
judges it with the gate. Rows the harness cache holds (same weights, prompts, decoding and floor
declines) are not generated again, so only what the change touches costs time.

The home is a benchmark's, not a live one: the version is evaluated as a challenger, so a champion alias
on it is retired first, and a `relevance_floor_dropped` tag written under earlier rules is removed
before and written again if this evaluation drops the floor (`evaluation.release.record_evaluation`).

    python bench/reevaluate.py --home /tmp/quality-hf [--version latest] [--items 120] [--probe-items 60]
"""

import argparse
import os
from pathlib import Path

from common import ROOT, adapter_version, write_result
from quality import METRICS, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a data home where bench/quality.py (adapter_retrain) ran")
    parser.add_argument("--version", default="latest", help="registry version, alias, or latest")
    parser.add_argument("--items", type=int, default=120, help="held-out items answered per model, as the run had")
    parser.add_argument("--probe-items", type=int, default=60, help="of those, probed, as the run had")
    parser.add_argument("--holdout", type=float, default=None, help="held-out share the job used (default: the setting)")
    parser.add_argument("--gate", default=str(ROOT / "evaluation" / "gate.yaml"))
    parser.add_argument("--name", required=True, help="result file name")
    args = parser.parse_args()
    os.environ["RAGTUNE_HOME"] = str(Path(args.home).resolve())

    from evaluation.eval_set import build_evaluation_set, indexed_doc_ids
    from evaluation.gate import GatePolicy, decide
    from evaluation.harness import HarnessConfig
    from evaluation.release import record_evaluation
    from evaluation.runner import evaluate, tqdm_progress
    from ragtune import registry
    from ragtune.jsonl import read_jsonl
    from ragtune.knowledge.live_index import live_store
    from ragtune.knowledge.relevance import DROPPED_TAG
    from ragtune.settings import load_settings

    s = load_settings()
    version, run_id = adapter_version(s, args.version)
    if registry.resolve(s.tracking_uri, s.registered_model, registry.CHAMPION) == version:
        registry.retire_champion(s.tracking_uri, s.registered_model, reason="bench/reevaluate: evaluated again as a challenger")
    before = registry.version_tags(s.tracking_uri, s.registered_model, version).get(DROPPED_TAG)
    if before:
        registry.client(s.tracking_uri).delete_model_version_tag(s.registered_model, version, DROPPED_TAG)

    curated = read_jsonl(s.home / "datasets" / "curated.jsonl")
    holdout = s.eval_holdout if args.holdout is None else args.holdout
    chosen = build_evaluation_set(curated, s.eval_set, indexed_doc_ids(live_store(s)), holdout, per_document=s.eval_per_document)
    config = HarnessConfig.for_settings(s, limit=args.items, probe_limit=args.probe_items)
    evaluation = evaluate(s, chosen["items"], config, challenger=version, progress=tqdm_progress(), skipped=chosen["skipped"])
    record_evaluation(s.tracking_uri, s.registered_model, run_id, evaluation)
    verdict = decide(evaluation.comparison, GatePolicy.from_yaml(args.gate))
    metrics = evaluation.report.metrics
    adapter = metrics["challenger_rag"]
    result = {
        "home": str(args.home),
        "version": version,
        "dropped_before": before,
        "relevance_floor": evaluation.decoding["relevance_floor"],
        "relevance_floors_measured": evaluation.decoding["relevance_floors_measured"],
        "relevance_floors_dropped": evaluation.decoding["relevance_floors_dropped"],
        "evaluated": {"items": evaluation.report.items, "probe_items": args.probe_items, "holdout": holdout},
        "retrieval": evaluation.report.retrieval,
        "base_rag": {m: metrics["base_rag"].get(m) for m in METRICS},
        "adapter_rag": {m: adapter.get(m) for m in METRICS},
        "comparison": evaluation.comparison,
        "verdict": verdict.as_dict(),
        "targets": targets(adapter, verdict.passed),
    }
    result["met"] = {k: v["met"] for k, v in result["targets"].items()}
    write_result(args.name, result)


if __name__ == "__main__":
    main()
