"""`ragtune refresh`, `search` and `index`: the knowledge layer's commands."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from ragtune.cli.output import BAD_INPUT_EXIT, emit, fail, status_spinner
from ragtune.settings import load_settings


def refresh(settings, source: str | None, allow_empty: bool, verbose: bool):
    from assets.knowledge import chunk_index, raw_documents
    from pipelines.jobs import INDEX_REFRESH
    from pipelines.run_config import node_name, ops_config
    from pipelines.runner import run_job

    config = ops_config(
        {
            chunk_index: {"allow_empty_source": allow_empty},
            raw_documents: {"source_dir": str(Path(source).resolve())} if source else {},
        }
    )
    return run_job(settings, INDEX_REFRESH, config, verbose=verbose, output_nodes=(node_name(chunk_index),))


def cmd_refresh(args) -> int:
    from ragtune.cli.render import print_refresh

    settings = load_settings()
    source = Path(args.source) if args.source else settings.source_dir
    if not source.is_dir():
        return fail(args, f"source folder does not exist or is not a folder: {source}", BAD_INPUT_EXIT)
    with status_spinner(args, f"refreshing the index from {source}"):
        outcome = refresh(settings, str(source), args.allow_empty_source, args.verbose)
    if not outcome.success:
        return fail(args, outcome.error or "refresh failed", run_id=outcome.run_id)
    emit(args, {"ok": True, "run_id": outcome.run_id, **outcome.outputs["chunk_index"]}, print_refresh)
    return 0


def cmd_search(args) -> int:
    from ragtune.cli.render import print_hits
    from ragtune.knowledge.live_index import EmbedderMismatch
    from ragtune.knowledge.retriever import LiveRetriever

    settings = load_settings()
    if not args.query.strip():
        return fail(args, "the query is empty: give the words to search for", BAD_INPUT_EXIT)
    try:
        live, store, retriever = LiveRetriever(settings).current()
    except EmbedderMismatch as exc:
        return fail(args, str(exc))
    if not store.exists():
        return fail(args, f"no index in {settings.lancedb_uri}; run `ragtune refresh` first")
    hits = retriever.search(args.query, k=args.k, groups=args.groups, mode=args.mode)
    emit(
        args,
        {
            "query": args.query,
            "mode": args.mode,
            "index_version": live.label(store.version()),
            "hits": [h.as_dict() for h in hits],
        },
        print_hits,
    )
    return 0


def cmd_index(args) -> int:
    from ragtune.knowledge.index_admin import NoIndexError, index_status, rollback_index
    from ragtune.knowledge.indexing import read_history

    settings = load_settings()
    try:
        if args.index_command == "rollback":
            payload = {"ok": True, **rollback_index(settings, args.to, args.reason or "")}
            emit(
                args,
                payload,
                lambda p: print(
                    f"index restored to version {p['restored_from']} (now version {p['version_after']}, {p['chunks']} chunks)"
                ),
            )
        elif args.index_command == "purge":
            from ragtune.purge import purge_documents

            with status_spinner(args, "purging from every table and version, then from the data home"):
                report = purge_documents(settings, args.doc, args.reason, args.by or getpass.getuser())
            ok = not report["unflagged"]
            emit(args, {"ok": ok, **report}, print_purge)
            return 0 if ok else 1
        elif args.index_command == "history":
            entries = read_history(settings.index_history)[-args.limit :]
            emit(args, {"history": entries}, lambda p: [print(json.dumps(e)) for e in p["history"]])
        else:
            emit(args, index_status(settings), lambda p: [print(f"{k}: {v}") for k, v in p.items()])
    except NoIndexError as exc:
        return fail(args, str(exc))
    except ValueError as exc:
        return fail(args, str(exc), BAD_INPUT_EXIT)
    return 0


def print_purge(p: dict) -> None:
    tables = (
        ", ".join(f"{t['table']} ({t['rows_deleted']} rows, {t['versions_removed']} old versions)" for t in p["tables"])
        or "no index table yet (refreshes will skip them)"
    )
    print(f"purged {', '.join(p['doc_ids'])} by {p['by']}: {tables}")
    print(
        f"removed {p['curated_removed']} curated records and {p['evaluation_rows_removed']} evaluation rows; "
        f"datasets rewritten: {', '.join(p['datasets'] + p['embedder_datasets']) or 'none'}"
    )
    flagged = p["versions_flagged"] + [f"embedder {v}" for v in p["embedder_versions_flagged"]]
    print(f"versions flagged needs_retrain: {', '.join(flagged) or 'none'}")
    for model, owed in p["unflagged"].items():
        print(f"error: could not flag {model} yet ({owed['error']}); run the purge again when the registry is back")


def add_commands(command, with_json) -> None:
    p = with_json(
        command("refresh", cmd_refresh, "Run the index_refresh job on the persistent Dagster instance (shows in the UI).")
    )
    p.add_argument("--source", help="document folder (default RAGTUNE_SOURCE_DIR, the bundled demo docs)")
    p.add_argument("--allow-empty-source", action="store_true", help="let an empty source delete every indexed chunk")
    p.add_argument("--verbose", action="store_true", help="show Dagster's step logs")

    p = with_json(command("search", cmd_search, "Hybrid search of the index (vector + full text, fused by reciprocal rank)."))
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5, help="number of results (default 5)")
    p.add_argument(
        "--groups", nargs="*", default=None, help="caller's access groups: only public chunks and those shared with these groups"
    )
    p.add_argument("--mode", choices=["hybrid", "vector", "fts"], default="hybrid")

    p = command("index", cmd_index, "Index status, history and rollback (LanceDB time travel).")
    index_sub = p.add_subparsers(dest="index_command", metavar="ACTION")
    with_json(index_sub.add_parser("status", help="version, chunk and document counts, indexes"))
    r = with_json(
        index_sub.add_parser("rollback", help="restore an earlier index version (default: the one before the last refresh)")
    )
    r.add_argument("--to", type=int, default=None, help="index version to restore")
    r.add_argument("--reason", default="", help="why, recorded in the index history")
    g = with_json(
        index_sub.add_parser(
            "purge",
            help="remove documents for good: from every table and retained version of the index (earlier versions, "
            "and so rollback points, are dropped), from training and evaluation data; flags versions trained on them",
        )
    )
    g.add_argument("--doc", action="append", required=True, metavar="ID", help="a document id to purge (repeat for more)")
    g.add_argument("--reason", required=True, help="why, for the audit log (`ragtune index history`)")
    g.add_argument("--by", default=None, help="who asked for it, for the audit log (default: the login name)")
    h = with_json(index_sub.add_parser("history", help="refreshes, rollbacks and purges, newest last"))
    h.add_argument("--limit", type=int, default=20)
    p.set_defaults(index_command="status")
