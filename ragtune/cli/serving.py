"""CLI for serving: `ragtune ask`, `ragtune feedback`, `ragtune serve`."""

from __future__ import annotations

import sys

from ragtune.cli.output import BAD_INPUT_EXIT, emit, fail, status_spinner
from ragtune.settings import load_settings


def cmd_ask(args) -> int:
    from ragtune.cli.render import print_answer
    from ragtune.serving.answerer import Answerer

    settings = load_settings()
    if len(args.question) > settings.serve_max_question_chars:
        return fail(
            args, f"question is {len(args.question)} characters; the limit is {settings.serve_max_question_chars}", BAD_INPUT_EXIT
        )
    with status_spinner(args, "loading the champion and answering"):
        try:
            answerer = Answerer.from_settings(settings, max_new_tokens=args.max_new_tokens, k=args.k)
            answer = answerer.answer(args.question, user=args.user, groups=args.groups)
        except ValueError as exc:
            return fail(args, str(exc), BAD_INPUT_EXIT)
    emit(args, {"ok": True, **answer.as_dict()}, print_answer)
    return 0


def cmd_feedback(args) -> int:
    from ragtune.behaviour.interactions import InteractionLog

    settings = load_settings()
    rating = None if args.rating == "clear" else args.rating
    try:
        InteractionLog(settings.interactions_db).add_feedback(args.id, rating, args.correction)
    except KeyError:
        return fail(
            args, f"no interaction with id {args.id!r}; ids are printed by `ragtune ask` and `ragtune logs`", BAD_INPUT_EXIT
        )
    emit(
        args,
        {"ok": True, "id": args.id, "rating": rating, "correction": args.correction},
        lambda p: print(
            f"recorded {p['rating'] or 'no rating'} on {p['id']}" + (" with a correction" if p["correction"] else "")
        ),
    )
    return 0


def cmd_serve(args) -> int:
    from ragtune.serving.server import serve

    settings = load_settings()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, not loopback; put authentication in front of it", file=sys.stderr)
    print(
        f"ragtune API on http://{args.host}:{args.port} (POST /v1/ask, POST /v1/feedback, GET /healthz; docs at /docs)",
        file=sys.stderr,
    )
    serve(settings, args.host, args.port)
    return 0


def add_commands(command, with_json) -> None:
    p = with_json(
        command(
            "ask",
            cmd_ask,
            "Answer a question with citations from the champion adapter (the base model before any "
            "release) and the live index, within the caller's access groups; the interaction is logged "
            "and its id printed for `ragtune feedback`.",
        )
    )
    p.add_argument("question")
    p.add_argument("--user", default="anonymous", help="who asks (recorded with the interaction)")
    p.add_argument("--groups", nargs="*", default=[], help="caller's access groups (default: none, public documents only)")
    p.add_argument("--k", type=int, default=None, help="chunks in the context (default RAGTUNE_SERVE_K, 3)")
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="generation budget (default RAGTUNE_SERVE_MAX_NEW_TOKENS, 160)"
    )

    p = with_json(
        command(
            "feedback",
            cmd_feedback,
            "Rate a logged answer up or down, optionally with the answer it should have "
            "given; rated and corrected answers are what the next retrain learns from.",
        )
    )
    p.add_argument("id", help="interaction id (printed by `ragtune ask`, returned by POST /v1/ask)")
    p.add_argument("rating", choices=["up", "down", "clear"])
    p.add_argument("--correction", default=None, help="the right answer, used for training instead of the logged one")

    p = command(
        "serve",
        cmd_serve,
        "Serve the HTTP API (FastAPI on uvicorn): POST /v1/ask, POST /v1/feedback, GET /healthz. "
        "Follows the champion alias: a promotion or rollback takes effect without a restart.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8000)
