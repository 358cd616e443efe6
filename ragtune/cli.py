"""The `ragtune` command line. Every command that reports takes --json and prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ragtune.cli_output import emit, fail, status_spinner
from ragtune.settings import REPO_ROOT, load_settings

DEMO_DIR = REPO_ROOT / "examples" / "apibench"


# -- commands ------------------------------------------------------------------
def cmd_import_apibench(args) -> int:
    from ragtune.apibench import import_apibench

    for flag, path in (("--api", args.api), ("--questions", args.questions)):
        if not Path(path).is_file():
            return fail(args, f"{flag} file not found: {path}")
    report = import_apibench(Path(args.api), Path(args.questions), Path(args.out), args.eval_fraction, args.seed, args.max_docs)
    emit(args, {"ok": True, "out": str(args.out), **report.as_dict()}, lambda p: print(
        f"wrote {p['documents']} documents, {p['interactions']} interactions, {p['eval_items']} evaluation items to {p['out']}"
        + (f" ({p['questions_without_gold']} questions had no matching document)" if p["questions_without_gold"] else "")
        + (f"; {len(p['bad_lines'])} malformed lines skipped" if p["bad_lines"] else "")))
    return 0


def refresh(settings, source: str | None, allow_empty: bool, verbose: bool):
    from ragtune.orchestration import run_job

    ops = {"chunk_index": {"config": {"allow_empty_source": allow_empty}}}
    if source:
        ops["raw_documents"] = {"config": {"source_dir": str(Path(source).resolve())}}
    return run_job(settings, "index_refresh", {"ops": ops}, verbose=verbose, output_nodes=("chunk_index",))


def cmd_refresh(args) -> int:
    from ragtune.render import print_refresh

    settings = load_settings()
    source = Path(args.source) if args.source else settings.source_dir
    if not source.is_dir():
        return fail(args, f"source folder does not exist or is not a folder: {source}")
    with status_spinner(args, f"refreshing the index from {source}"):
        outcome = refresh(settings, str(source), args.allow_empty_source, args.verbose)
    if not outcome.success:
        return fail(args, outcome.error or "refresh failed", run_id=outcome.run_id)
    emit(args, {"ok": True, "run_id": outcome.run_id, **outcome.outputs["chunk_index"]}, print_refresh)
    return 0


def cmd_search(args) -> int:
    from ragtune.embedder import embedder_for
    from ragtune.render import print_hits
    from ragtune.retriever import Retriever
    from ragtune.store import ChunkStore

    settings = load_settings()
    store = ChunkStore(settings.lancedb_uri, settings.table_name)
    if not store.exists():
        return fail(args, f"no index in {settings.lancedb_uri}; run `ragtune refresh` first")
    embedder = embedder_for(settings)
    retriever = Retriever(store, embedder, rrf_k=settings.rrf_k)
    hits = retriever.search(args.query, k=args.k, groups=args.groups, mode=args.mode)
    emit(args, {"query": args.query, "mode": args.mode, "index_version": store.version(), "hits": [h.as_dict() for h in hits]}, print_hits)
    return 0


def cmd_index(args) -> int:
    from ragtune.index_admin import NoIndexError, index_status, rollback_index
    from ragtune.indexing import read_history

    settings = load_settings()
    try:
        if args.index_command == "rollback":
            payload = {"ok": True, **rollback_index(settings, args.to, args.reason or "")}
            emit(args, payload, lambda p: print(f"index restored to version {p['restored_from']} (now version {p['version_after']}, {p['chunks']} chunks)"))
        elif args.index_command == "history":
            entries = read_history(settings.index_history)[-args.limit:]
            emit(args, {"history": entries}, lambda p: [print(json.dumps(e)) for e in p["history"]])
        else:
            emit(args, index_status(settings), lambda p: [print(f"{k}: {v}") for k, v in p.items()])
    except (NoIndexError, ValueError) as exc:
        return fail(args, str(exc))
    return 0


def cmd_demo(args) -> int:
    from ragtune.demo import run_demo
    from ragtune.render import print_demo

    settings = load_settings()
    if not getattr(args, "json", False):
        print("ragtune demo: refresh the index, curate the bundled interactions, build RAFT data, train a LoRA, "
              "evaluate it against the base model on held-out interactions, gate and release it, then ask the new champion", file=sys.stderr)
    summary = run_demo(settings, DEMO_DIR, verbose=args.verbose, train_steps=args.train_steps,
                       eval_limit=args.eval_limit, probe_limit=args.probe_limit, max_new_tokens=args.max_new_tokens,
                       min_eval_items=args.min_eval_items)
    emit(args, summary, print_demo)
    return 0 if summary["ok"] else 1


def cmd_ui(args) -> int:
    from ragtune.orchestration import prepare_dagster_home

    settings = load_settings()
    prepare_dagster_home(settings)
    os.chdir(REPO_ROOT)
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    print(f"Dagster UI on http://{args.host}:{args.port} (instance {settings.dagster_home})", file=sys.stderr)
    os.execv(cmd[0], cmd)


def mlflow_server_command(settings, host: str, port: int, workers: int = 1) -> list[str]:
    """`mlflow server` on the data home's tracking store and artifacts (what `make mlflow-ui` runs)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow), "server", "--backend-store-uri", settings.tracking_uri, "--registry-store-uri", settings.tracking_uri,
            "--default-artifact-root", settings.mlflow_artifacts.resolve().as_uri(), "--no-serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers)]


def cmd_mlflow_ui(args) -> int:
    settings = load_settings()
    settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    cmd = mlflow_server_command(settings, args.host, args.port)
    print(f"MLflow tracking and registry on http://{args.host}:{args.port} (store {settings.tracking_uri})", file=sys.stderr)
    os.execv(cmd[0], cmd)


# -- parser --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Keep a hybrid LLM system fresh: a nightly-refreshed document index (LanceDB) and a LoRA "
        "adapter trained on curated interactions (TRL, MLflow), orchestrated by Dagster. "
        "Data lives in RAGTUNE_HOME (default ./.ragtune).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def with_json(p):
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        return p

    p = with_json(command("demo", cmd_demo, "Run the main job on the bundled APIBench demo: refresh the index, check retrieval, "
                          "curate the bundled interactions, build RAFT data, train a LoRA adapter, evaluate it against "
                          "the base model on held-out questions, gate and release it."))
    p.add_argument("--verbose", action="store_true", help="show Dagster's step logs")
    p.add_argument("--train-steps", type=int, default=None, help="training steps (default: training/configs/demo.yaml)")
    p.add_argument("--eval-limit", type=int, default=None, help="held-out questions answered per model (default: all 71)")
    p.add_argument("--probe-limit", type=int, default=None, help="of those, probed for abstention and adherence (default 20)")
    p.add_argument("--min-eval-items", type=int, default=None, help="fewest usable held-out items to go on (default 30)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget per evaluated answer (default 128)")

    p = with_json(command("import-apibench", cmd_import_apibench, "Convert APIBench files into documents, interactions and an evaluation set."))
    p.add_argument("--api", required=True, help="APIBench API file (JSON lines), e.g. huggingface_api.jsonl")
    p.add_argument("--questions", required=True, help="APIBench questions file (JSON lines), e.g. huggingface_eval.json")
    p.add_argument("--out", required=True, help="output folder (docs/, interactions.jsonl, eval.jsonl)")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share of questions held out for evaluation (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of --max-docs sampling (default 0)")
    p.add_argument("--max-docs", type=int, default=None, help="keep a random subset of this many documents")

    p = with_json(command("refresh", cmd_refresh, "Run the index_refresh job on the persistent Dagster instance (shows in the UI)."))
    p.add_argument("--source", help="document folder (default RAGTUNE_SOURCE_DIR, the bundled demo docs)")
    p.add_argument("--allow-empty-source", action="store_true", help="let an empty source delete every indexed chunk")
    p.add_argument("--verbose", action="store_true", help="show Dagster's step logs")

    p = with_json(command("search", cmd_search, "Hybrid search of the index (vector + full text, fused by reciprocal rank)."))
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--groups", nargs="*", default=None, help="caller's access groups: only public chunks and those shared with these groups")
    p.add_argument("--mode", choices=["hybrid", "vector", "fts"], default="hybrid")

    p = command("index", cmd_index, "Index status, history and rollback (LanceDB time travel).")
    index_sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    with_json(index_sub.add_parser("status", help="version, chunk and document counts, indexes"))
    r = with_json(index_sub.add_parser("rollback", help="restore an earlier index version (default: the one before the last refresh)"))
    r.add_argument("--to", type=int, default=None, help="index version to restore")
    r.add_argument("--reason", default="", help="why, recorded in the index history")
    h = with_json(index_sub.add_parser("history", help="refreshes and rollbacks, newest last"))
    h.add_argument("--limit", type=int, default=20)
    p.set_defaults(index_command="status")

    from ragtune import behaviour_commands, release_commands, serve_commands

    behaviour_commands.add_commands(command, with_json)
    release_commands.add_commands(command, with_json)
    serve_commands.add_commands(command, with_json)

    p = command("ui", cmd_ui, "Start the Dagster UI and daemon (schedules) on the ragtune instance.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)

    p = command("mlflow-ui", cmd_mlflow_ui, "Serve MLflow tracking and the adapter registry (UI and REST API) on the data home's store.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
