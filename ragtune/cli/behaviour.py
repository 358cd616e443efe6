"""CLI commands of the behaviour half: the interaction log, curation, erasure, the adapter registry."""

from __future__ import annotations

from pathlib import Path

from ragtune.cli.output import BAD_INPUT_EXIT, emit, fail, status_spinner
from ragtune.settings import load_settings


def cmd_logs(args) -> int:
    from ragtune.behaviour.datasets import load_curated
    from ragtune.behaviour.interactions import InteractionLog
    from ragtune.cli.render import print_import, print_records

    settings = load_settings()
    log = InteractionLog(settings.interactions_db)
    if args.logs_command == "import":
        if not Path(args.file).is_file():
            return fail(args, f"file not found: {args.file}", BAD_INPUT_EXIT)
        report = log.import_jsonl(Path(args.file))
        emit(args, {"ok": True, "file": str(args.file), **report.as_dict(), "total": log.count()}, print_import)
        return 0
    if args.curated:
        records = load_curated(settings.datasets_dir)
        total, records = len(records), records[::-1][: args.limit]  # newest first, like the log
    else:
        total, records = log.count(), log.records(limit=args.limit, newest_first=True)
    emit(args, {"curated": args.curated, "total": total, "records": records}, print_records)
    return 0


def cmd_curate(args) -> int:
    from pipelines.jobs import INTERACTION_CURATION
    from pipelines.runner import run_job
    from ragtune.cli.render import print_curation

    settings = load_settings()
    with status_spinner(args, "curating the interaction log"):
        outcome = run_job(settings, INTERACTION_CURATION, verbose=args.verbose)
    report = outcome.metadata.get("curated_interactions")
    if report is None:
        return fail(args, outcome.error or "curation failed", run_id=outcome.run_id)
    payload = {"ok": outcome.success, "run_id": outcome.run_id, **report}
    if not outcome.success:  # curated, but a blocking check failed: say which and on which records, keep the counts
        failed = [f"{name}: {check['description']}" for name, check in outcome.checks.items() if not check["passed"]]
        payload["error"] = "; ".join(failed) or outcome.error
    emit(args, payload, print_curation)
    return 0 if outcome.success else 1


def cmd_forget(args) -> int:
    from ragtune.behaviour.erasure import forget
    from ragtune.cli.render import print_forget

    try:
        report = forget(load_settings(), args.user)
    except ValueError as exc:
        return fail(args, str(exc), BAD_INPUT_EXIT)
    ok = not report["unflagged"]
    emit(args, {"ok": ok, **report}, print_forget)
    return 0 if ok else 1  # the data is gone; the flags the registry still owes are paid by the next forget


def cmd_models(args) -> int:
    from ragtune.cli.render import print_models
    from ragtune.registry import RegistryError, list_versions, promote, rollback

    settings = load_settings()
    if args.models_command == "history":
        return models_history(args, settings)
    if getattr(args, "embedder", False):
        return embedder_models(args, settings)
    uri, name = settings.tracking_uri, settings.registered_model
    try:
        if args.models_command == "promote":
            moved = promote(uri, name, args.version, args.reason, force=args.force)
            emit(
                args,
                {"ok": True, **moved},
                lambda p: print(f"champion is now version {p['champion']} (was {p['previous_champion'] or 'none'})"),
            )
            return 0
        if args.models_command == "rollback":
            moved = rollback(uri, name, args.reason, args.to, force=args.force)
            emit(
                args,
                {"ok": True, **moved},
                lambda p: print(f"champion rolled back to version {p['champion']} (from {p['rolled_back_from'] or 'none'})"),
            )
            return 0
    except RegistryError as exc:
        return fail(args, str(exc))
    versions = list_versions(uri, name)
    emit(args, {"registered_model": settings.registered_model, "versions": versions}, print_models)
    return 0


def models_history(args, settings) -> int:
    """`ragtune models history [--at T]`: every alias move from the registry's log; with --at, the champion then."""
    from datetime import UTC, datetime

    from ragtune.cli.render import print_history
    from ragtune.registry import alias_history, champion_at

    name = settings.registered_embedder if args.embedder else settings.registered_model
    moves = alias_history(settings.tracking_uri, name)
    payload = {"registered_model": name, "moves": moves}
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            return fail(args, f"--at {args.at!r} is not an ISO time (e.g. 2026-11-30T12:00:00+00:00)", BAD_INPUT_EXIT)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        payload.update(at=at.isoformat(), champion_at=champion_at(moves, at))
    emit(args, payload, print_history)
    return 0


def embedder_models(args, settings) -> int:
    """`ragtune models ... --embedder`: the fine-tuned embedder's versions and the live table; roll back a swap."""
    from evaluation.embedder_release import roll_back_embedder
    from ragtune.cli.render import print_models
    from ragtune.knowledge.live_index import read_live
    from ragtune.registry import RegistryError, list_versions

    if args.models_command == "promote":
        return fail(
            args,
            "an embedder goes live only through its gate (ragtune retrain builds, checks and switches a new table); "
            "use `ragtune models rollback --embedder` to switch back",
        )
    if args.models_command == "rollback":
        try:
            moved = roll_back_embedder(settings, args.reason)
        except (ValueError, RegistryError) as exc:
            return fail(args, str(exc))
        emit(
            args,
            {"ok": True, **moved},
            lambda p: print(
                f"live index is table {p['live_table']} again (embedder {p['embedder_version']}); nothing re-embedded"
            ),
        )
        return 0
    live = read_live(settings)
    payload = {
        "registered_model": settings.registered_embedder,
        "live": {"table": live.table, "embedder_version": live.embedder_version, "switched_at": live.switched_at},
        "versions": list_versions(settings.tracking_uri, settings.registered_embedder),
    }
    emit(
        args,
        payload,
        lambda p: (print(f"live table {p['live']['table']} (embedder {p['live']['embedder_version']})"), print_models(p)),
    )
    return 0


def add_commands(command, with_json) -> None:
    """Register the commands on the main parser (see ragtune.cli.build_parser)."""
    p = command("logs", cmd_logs, "The interaction log: import records, show recent or curated ones.")
    sub = p.add_subparsers(dest="logs_command", metavar="ACTION")
    i = with_json(
        sub.add_parser("import", help="append a JSONL file of interaction records (malformed lines skipped and counted)")
    )
    i.add_argument("file")
    s = with_json(sub.add_parser("show", help="the newest records (or the curated snapshot with --curated)"))
    s.add_argument("--curated", action="store_true", help="show the last curated snapshot instead of the raw log")
    s.add_argument("--limit", type=int, default=20, help="how many records (default 20)")
    p.set_defaults(logs_command="show", curated=False, limit=20, json=False)

    p = with_json(
        command("curate", cmd_curate, "Run the interaction_curation job: feedback rules, length, PII scrubbing, de-duplication.")
    )
    p.add_argument("--verbose", action="store_true", help="show Dagster's step logs")

    p = with_json(
        command("forget", cmd_forget, "Erase a user from the log and curated data; flag adapters trained on them for retraining.")
    )
    p.add_argument("--user", required=True, help="the user id as logged")

    p = command(
        "models",
        cmd_models,
        "The adapter registry in MLflow: versions, aliases and tags; promote and roll back. With --embedder: the "
        "fine-tuned embedder's versions and the live index table.",
    )
    embedder = "--embedder"
    embedder_help = "act on the embedder (RAGTUNE_REGISTERED_EMBEDDER and the live index table) instead of the adapter"
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    with_json(sub.add_parser("list", help="every version, newest first, with aliases and tags")).add_argument(
        embedder, action="store_true", help=embedder_help
    )
    m = with_json(sub.add_parser("promote", help="make VERSION the champion; the old champion becomes previous_champion"))
    m.add_argument("version")
    m.add_argument("--reason", required=True, help="why, recorded as a tag on the versions")
    m.add_argument("--force", action="store_true", help="also promote a version flagged needs_retrain")
    m.add_argument(embedder, action="store_true", help="(refused: an embedder goes live only through its gate)")
    r = with_json(sub.add_parser("rollback", help="move champion back to previous_champion (or --to VERSION) in one command"))
    r.add_argument("--to", default=None, help="the version to restore (default: previous_champion)")
    r.add_argument("--reason", required=True, help="why, recorded as a tag on the versions")
    r.add_argument("--force", action="store_true", help="also restore a version flagged needs_retrain")
    r.add_argument(
        embedder, action="store_true", help="switch the live index back to the table (and embedder) before the last swap"
    )
    h = with_json(
        sub.add_parser("history", help="every alias move (time, alias, from, to, reason, run id); --at: the champion then")
    )
    h.add_argument("--at", default=None, help="an ISO time (UTC unless it says otherwise): which version was champion then")
    h.add_argument(embedder, action="store_true", help="the embedder's moves instead of the adapter's")
    p.set_defaults(models_command="list", json=False, embedder=False)
