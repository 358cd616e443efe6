"""The `ragtune` command line. Every command that reports takes --json and prints one JSON object.

The parser is assembled here; each layer's commands live in their own module (knowledge, behaviour,
release, serving), the demo in demo.py."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ragtune.cli.output import BAD_INPUT_EXIT, emit, fail
from ragtune.settings import REPO_ROOT, load_settings

DEMO_DIR = REPO_ROOT / "examples" / "apibench"


# -- commands ------------------------------------------------------------------
def cmd_import_apibench(args) -> int:
    from ragtune.cli.apibench import import_apibench

    for flag, path in (("--api", args.api), ("--questions", args.questions)):
        if not Path(path).is_file():
            return fail(args, f"{flag} file not found: {path}", BAD_INPUT_EXIT)
    report = import_apibench(Path(args.api), Path(args.questions), Path(args.out), args.eval_fraction, args.seed, args.max_docs)
    emit(
        args,
        {"ok": True, "out": str(args.out), **report.as_dict()},
        lambda p: print(
            f"wrote {p['documents']} documents, {p['interactions']} interactions, {p['eval_items']} evaluation items to {p['out']}"
            + (f" ({p['questions_without_gold']} questions had no matching document)" if p["questions_without_gold"] else "")
            + (f"; {len(p['bad_lines'])} malformed lines skipped" if p["bad_lines"] else "")
            + (f"; {len(p['unseparated'])} questions skipped ({p['unseparated'][0]})" if p["unseparated"] else "")
        ),
    )
    return 0


def cmd_demo(args) -> int:
    from ragtune.cli.demo import run_demo
    from ragtune.cli.render import print_demo

    settings = load_settings()
    if not getattr(args, "json", False):
        print(
            "ragtune demo: refresh the index, curate the bundled interactions, build RAFT data, train a LoRA, "
            "evaluate it against the base model on held-out interactions, gate and release it, then ask the new champion",
            file=sys.stderr,
        )
    summary = run_demo(
        settings,
        DEMO_DIR,
        verbose=args.verbose,
        train_steps=args.train_steps,
        eval_limit=args.eval_limit,
        probe_limit=args.probe_limit,
        max_new_tokens=args.max_new_tokens,
        min_eval_items=args.min_eval_items,
    )
    emit(args, summary, print_demo)
    return 0 if summary["ok"] else 1


def cmd_ui(args) -> int:
    from pipelines.runner import prepare_dagster_home

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
    return [
        str(mlflow),
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--registry-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        settings.mlflow_artifacts.resolve().as_uri(),
        "--no-serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


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
    parser.add_argument(
        "--verbose", dest="traceback", action="store_true", help="on an error, show the traceback too (before the command)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def with_json(p):
        p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        return p

    p = with_json(
        command(
            "demo",
            cmd_demo,
            "Run the main job on the bundled APIBench demo: refresh the index, check retrieval, "
            "curate the bundled interactions, build RAFT data, train a LoRA adapter, evaluate it against "
            "the base model on held-out questions, gate and release it.",
        )
    )
    p.add_argument("--verbose", action="store_true", help="show Dagster's step logs")
    p.add_argument("--train-steps", type=int, default=None, help="training steps (default: training/configs/demo.yaml)")
    p.add_argument(
        "--eval-limit", type=int, default=None, help="held-out questions answered per model (default: all of them, 51)"
    )
    p.add_argument("--probe-limit", type=int, default=None, help="of those, probed for abstention and adherence (default 26)")
    p.add_argument("--min-eval-items", type=int, default=None, help="fewest usable held-out items to go on (default 30)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generation budget per evaluated answer (default 128)")

    p = with_json(
        command(
            "import-apibench", cmd_import_apibench, "Convert APIBench files into documents, interactions and an evaluation set."
        )
    )
    p.add_argument("--api", required=True, help="APIBench API file (JSON lines), e.g. huggingface_api.jsonl")
    p.add_argument("--questions", required=True, help="APIBench questions file (JSON lines), e.g. huggingface_eval.json")
    p.add_argument("--out", required=True, help="output folder (docs/, interactions.jsonl, eval.jsonl)")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share of questions held out for evaluation (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of --max-docs sampling (default 0)")
    p.add_argument("--max-docs", type=int, default=None, help="keep a random subset of this many documents")

    from ragtune.cli import behaviour, knowledge, release, serving

    for layer in (knowledge, behaviour, release, serving):
        layer.add_commands(command, with_json)

    p = command("ui", cmd_ui, "Start the Dagster UI and daemon (schedules) on the ragtune instance.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)

    p = command(
        "mlflow-ui", cmd_mlflow_ui, "Serve MLflow tracking and the adapter registry (UI and REST API) on the data home's store."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    return parser


# Errors in what the user gave (a missing file, a bad value): exit code 2, as argparse uses for bad arguments.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, KeyError)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Any error ends as one line (`error: ...`, or JSON with --json), exit 2 for bad input and
    1 otherwise; `ragtune --verbose COMMAND` shows the traceback as well."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.traceback:
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, BAD_INPUT):
            message = f"{type(exc).__name__}: {message}"
        return fail(
            args, message.splitlines()[0] if not args.traceback else message, BAD_INPUT_EXIT if isinstance(exc, BAD_INPUT) else 1
        )


if __name__ == "__main__":
    sys.exit(main())
