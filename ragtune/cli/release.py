"""CLI for the release loop: `ragtune retrain` and `ragtune eval`."""

from __future__ import annotations

from pathlib import Path

from ragtune.cli.output import BAD_INPUT_EXIT, emit, fail, status_spinner
from ragtune.settings import Settings, load_settings

GATE_CHECK = "release_gate"
REJECTED_EXIT = 3  # `ragtune retrain` exit status when the gate kept the champion


def retrain_run_config(
    training_config: str | None = None,
    max_steps: int | None = None,
    eval_set: str | None = None,
    eval_limit: int | None = None,
    probe_limit: int | None = None,
    gate: str | None = None,
    max_new_tokens: int | None = None,
    distractors: int | None = None,
    max_minutes: float | None = None,
    oracle_probability: float | None = None,
    min_eval_items: int | None = None,
    holdout: float | None = None,
    raft_order: str | None = None,
    embedder: bool | None = None,
    embedder_minutes: float | None = None,
    embedder_min_items: int | None = None,
) -> dict:
    """Dagster run config of adapter_retrain; only what is given overrides the assets' defaults."""
    from assets.behaviour import evaluation_set, lora_adapter, raft_dataset
    from assets.embedder import embedder_release
    from assets.release import adapter_evaluation, release, release_gate
    from pipelines.run_config import ops_config

    def given(**values) -> dict:
        return {k: v for k, v in values.items() if v is not None}

    return ops_config(
        {
            embedder_release: given(enabled=embedder, max_minutes=embedder_minutes, min_items=embedder_min_items),
            raft_dataset: given(distractors=distractors, oracle_probability=oracle_probability, order=raft_order),
            lora_adapter: given(training_config=training_config, max_steps=max_steps, max_minutes=max_minutes),
            evaluation_set: given(eval_set=eval_set, min_items=min_eval_items, holdout=holdout, policy=gate),
            adapter_evaluation: given(limit=eval_limit, probe_limit=probe_limit, max_new_tokens=max_new_tokens),
            release_gate: given(policy=gate),
            release: given(policy=gate),
        }
    )


def retrain(settings: Settings, run_config: dict, verbose: bool = False) -> dict:
    """Run adapter_retrain on the persistent instance; a report of every stage that ran, and the verdict.

    `ok` is true when the run reached a decision: released, or rejected by the gate (the champion stays).
    """
    from pipelines.jobs import ADAPTER_RETRAIN
    from pipelines.runner import run_job
    from ragtune import registry

    outcome = run_job(
        settings,
        ADAPTER_RETRAIN,
        run_config,
        verbose=verbose,
        output_nodes=("evaluation_set", "embedder_release", "raft_dataset", "lora_adapter", "adapter_evaluation", "release"),
    )
    raft, adapter, evaluation, released = (
        outcome.outputs.get(k) for k in ("raft_dataset", "lora_adapter", "adapter_evaluation", "release")
    )
    gate = outcome.checks.get(GATE_CHECK)
    curated = outcome.metadata.get("curated_interactions", {})
    report = {
        "ok": outcome.success or bool(gate and not gate["passed"]),
        "run_id": outcome.run_id,
        "curation": {k: curated.get(k) for k in ("input", "kept", "dropped", "redactions")} if curated else None,
    }
    chosen = outcome.outputs.get("evaluation_set")
    if chosen:
        report["evaluation_set"] = {
            "source": chosen["source"],
            "items": len(chosen["items"]),
            "held_out_from_training": len(chosen["held_out_ids"]),
            "skipped": len(chosen["skipped"]),
            "capped_per_document": chosen.get("capped", 0),
            "per_document": chosen.get("per_document"),
            "gold_documents": chosen.get("documents"),
        }
    embedder = outcome.outputs.get("embedder_release")
    if embedder:
        report["embedder"] = embedder_report(embedder)
    if raft:
        report["raft"] = {k: raft[k] for k in ("digest", "train", "validation", "oracle_share", "distractors", "index_version")}
        report["raft"]["relevance_floor"] = raft.get("relevance_floor")
    if adapter:
        report["adapter"] = {
            "model_version": adapter["model_version"],
            "mlflow_run_id": adapter["run_id"],
            **adapter["metrics"],
            "dtype": adapter.get("dtype"),
            "learning_curve": adapter.get("learning_curve", []),
        }
    if evaluation:
        report["evaluation"] = {
            k: evaluation[k]
            for k in ("metrics", "comparison", "retrieval", "items", "incumbent", "champion", "challenger", "index_version")
        }
        report["evaluation"]["relevance_floor"] = (evaluation.get("decoding") or {}).get("relevance_floor")
        report["evaluation"]["scoring_version"] = evaluation.get("scoring_version")
    if gate:
        report["verdict"] = {
            "passed": gate["passed"],
            "outcome": gate["metadata"].get("outcome"),
            "reasons": gate["metadata"].get("reasons", []),
        }
    report["released"] = bool(released and released.get("released"))
    report["aliases"] = registry.aliases(settings.tracking_uri, settings.registered_model)
    if not report["ok"]:
        report["error"] = outcome.error
    return report


def embedder_report(released: dict) -> dict:
    """What `ragtune retrain` says about the embedder: trained or why not, the verdict, whether it was swapped in."""
    if not released.get("trained"):
        return {"trained": False, "reason": released.get("reason", "")}
    verdict = released["verdict"]
    return {
        "trained": True,
        "version": released["version"],
        "outcome": verdict["outcome"],
        "switched": released["switched"],
        "reasons": verdict["reasons"],
        "metrics": released["comparison"]["metrics"],
        "pairs": released["training"]["pairs"],
        "train_seconds": released["training"]["seconds"],
    }


def cmd_retrain(args) -> int:
    from ragtune.cli.render import print_retrain

    settings = load_settings()
    config = retrain_run_config(
        args.training_config,
        args.max_steps,
        args.eval_set,
        args.eval_limit,
        args.probe_limit,
        args.gate,
        args.max_new_tokens,
        embedder=args.embedder,
        embedder_minutes=args.embedder_minutes,
    )
    with status_spinner(args, "retraining: curate, RAFT data, train, evaluate, gate, release"):
        report = retrain(settings, config, args.verbose)
    if not report["ok"]:
        return fail(args, report.get("error") or "adapter_retrain failed", run_id=report["run_id"])
    emit(args, report, print_retrain)
    return 0 if report["released"] else REJECTED_EXIT


def cmd_eval(args) -> int:
    from evaluation.eval_set import build_evaluation_set, indexed_doc_ids
    from evaluation.gate import GatePolicy
    from evaluation.harness import HarnessConfig
    from evaluation.runner import evaluate, tqdm_progress, verdict_of
    from ragtune import registry
    from ragtune.cli.render import print_evaluation
    from ragtune.knowledge.live_index import live_store

    settings = load_settings()
    if not Path(args.set).is_file():
        return fail(args, f"evaluation set not found: {args.set}", BAD_INPUT_EXIT)
    challenger = None
    if args.adapter:
        challenger = registry.resolve(settings.tracking_uri, settings.registered_model, args.adapter)
        if challenger is None:
            return fail(args, f"no version behind alias {args.adapter!r}; see `ragtune models list`", BAD_INPUT_EXIT)
    config = HarnessConfig.for_settings(
        settings, k=args.k, limit=args.limit, probe_limit=args.probe_limit, max_new_tokens=args.max_new_tokens
    )
    try:
        chosen = build_evaluation_set(
            [],
            args.set,
            indexed_doc_ids(live_store(settings)),
            settings.eval_holdout,
            per_document=settings.eval_per_document,
        )
        evaluation = evaluate(
            settings, chosen["items"], config, challenger=challenger, progress=tqdm_progress(), skipped=chosen["skipped"]
        )
    except (ValueError, FileNotFoundError) as e:  # the set or the options given
        return fail(args, str(e), BAD_INPUT_EXIT)
    except RuntimeError as e:
        return fail(args, str(e))
    payload = {
        "ok": True,
        "set": str(args.set),
        "capped_per_document": chosen["capped"],
        "per_document": chosen["per_document"],
        **evaluation.as_dict(),
    }
    if challenger:
        payload["verdict"] = verdict_of(
            payload, GatePolicy.from_yaml(args.gate) if args.gate else GatePolicy.from_yaml()
        ).as_dict()
    emit(args, payload, print_evaluation)
    return 0


def add_commands(command, with_json) -> None:
    p = with_json(
        command(
            "retrain",
            cmd_retrain,
            "Run adapter_retrain on the persistent instance (the quarterly job): curate, "
            "build RAFT data, train, evaluate against the champion, gate, release. Exit status 0 when "
            f"released, {REJECTED_EXIT} when the gate kept the champion, 1 on error.",
        )
    )
    p.add_argument("--training-config", default=None, help="training YAML (default training/configs/default.yaml)")
    p.add_argument("--max-steps", type=int, default=None, help="override the training YAML's max_steps")
    p.add_argument(
        "--eval-set",
        default=None,
        help="evaluation set .jsonl (default RAGTUNE_EVAL_SET; when empty, a held-out "
        "share of the curated interactions, never trained on)",
    )
    p.add_argument("--eval-limit", type=int, default=None, help="items answered per candidate (default: all)")
    p.add_argument("--probe-limit", type=int, default=None, help="items also probed for abstention and adherence (default 60)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget per evaluated answer (default 128)")
    p.add_argument("--gate", default=None, help="gate policy YAML (default evaluation/gate.yaml)")
    p.add_argument(
        "--no-embedder",
        dest="embedder",
        action="store_false",
        default=None,
        help="keep the live embedder this run (default: RAGTUNE_EMBEDDER_TRAINING, fine-tune, gate and swap it first)",
    )
    p.add_argument(
        "--embedder-minutes", type=float, default=None, help="embedder training budget (default RAGTUNE_EMBEDDER_TRAIN_MINUTES)"
    )
    p.add_argument("--verbose", action="store_true", help="show Dagster's step logs")

    p = with_json(
        command(
            "eval",
            cmd_eval,
            "Run the evaluation harness: base model + RAG, champion + RAG and, with --adapter, "
            "that version with and without retrieval; prints the metrics table (and the gate's verdict).",
        )
    )
    p.add_argument(
        "--set", required=True, help="evaluation set (.jsonl: id, question, reference_answer, gold_doc_ids, answerable)"
    )
    p.add_argument("--adapter", default=None, help="version or alias to judge as the challenger (e.g. 7, challenger)")
    p.add_argument("--limit", type=int, default=None, help="items answered per candidate (default: all)")
    p.add_argument("--probe-limit", type=int, default=None, help="items also probed for abstention and adherence (default: all)")
    p.add_argument("--k", type=int, default=None, help="documents in the context (default RAGTUNE_SERVE_K, 3: as served)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation budget per answer (default 128)")
    p.add_argument("--gate", default=None, help="gate policy YAML for the verdict (default evaluation/gate.yaml)")
