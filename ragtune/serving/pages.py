"""The web pages beside the JSON API: `/` to ask, rate and correct; `/review` to review logged answers.

Server-rendered HTML (Jinja2 templates in ./templates, autoescaped: a question or a document holding
`<script>` shows as text) and plain forms, so no JavaScript and no build step. The ask page answers
exactly as POST /v1/ask does (the same admission limits, the caller's groups filtering retrieval), and
its ratings are the feedback POST /v1/feedback records; documents chosen there must be among those the
answer was given from.

Reviewing needs the reviewer token from the settings (`RAGTUNE_REVIEW_TOKEN`). Signing in with it sets one
cookie holding the reviewer's name and an HMAC of that name keyed by the token (HttpOnly, SameSite=Strict,
Secure under https): the token itself never leaves the sign-in form, and a name cannot be changed without
signing in again. Changing the token signs everyone out. Without a configured token /review answers 404. Every
review is a feedback event with the reviewer's name (append-only): approve, correct or reject the
answer, and name the documents that really answer it, which curation then takes as the gold documents.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ragtune.behaviour.answer_flags import agree, flags, low_retrieval, top_similarity
from ragtune.behaviour.interactions import RecordError

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True))
REVIEWER_COOKIE = "ragtune_reviewer"
RECENT = 1000  # the review queue looks at this many newest interactions
SHOWN = 100  # and lists at most this many of those that match the filter
FILTERS = {
    "unreviewed": "not yet reviewed",
    "down": "down-voted",
    "fallback": "fallbacks",
    "abstained": "abstentions",
    "low_retrieval": "low retrieval scores",
    "disagreements": "challenger disagrees",
    "all": "all recent",
}


@dataclass
class Flags:
    """What the review queue filters on, for one logged interaction."""

    down: bool
    fallback: bool
    abstained: bool
    low_retrieval: bool
    reviewed: bool
    top_similarity: float | None
    disagreeing: list[dict]  # shadow answers (the challenger's) that disagree with this one

    @classmethod
    def of(cls, record: dict, low_similarity: float, shadows: list[dict] = ()) -> Flags:
        top, seen = top_similarity(record), flags(record)
        return cls(
            down=seen["down"],
            fallback=seen["fallback"],
            abstained=seen["not_covered"],  # by the model or the relevance floor: either way the user was told so
            low_retrieval=low_retrieval(record, low_similarity),
            reviewed=record.get("reviewer") is not None,
            top_similarity=top,
            disagreeing=[s for s in shadows if not agree(record, s)],
        )

    def matches(self, show: str) -> bool:
        return {
            "unreviewed": not self.reviewed,
            "down": self.down,
            "fallback": self.fallback,
            "abstained": self.abstained,
            "low_retrieval": self.low_retrieval,
            "disagreements": bool(self.disagreeing),
        }.get(show, True)


def review_queue(records: list[dict], show: str, low_similarity: float) -> list[tuple[dict, Flags]]:
    """The live (not shadow) records matching the filter, newest first, at most SHOWN."""
    shadows: dict[str, list[dict]] = {}
    for record in records:
        if record.get("shadow_of"):
            shadows.setdefault(record["shadow_of"], []).append(record)
    listed = []
    for record in records:
        if record.get("shadow_of"):
            continue
        flags = Flags.of(record, low_similarity, shadows.get(record["id"], []))
        if flags.matches(show):
            listed.append((record, flags))
        if len(listed) >= SHOWN:
            break
    return listed


def form_fields(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def first(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    return (fields.get(name) or [default])[0]


def doc_ids_of(fields: dict[str, list[str]]) -> list[str]:
    """Checked documents plus any typed into the `other_docs` box (comma- or space-separated)."""
    typed = first(fields, "other_docs").replace(",", " ").split()
    return list(dict.fromkeys([d for d in fields.get("docs", []) if d] + typed))


def signed(name: str, token: str) -> str:
    """The reviewer cookie's value: the name and its HMAC-SHA256 under the reviewer token."""
    return f"{hmac.new(token.encode(), name.encode(), hashlib.sha256).hexdigest()}:{name}"


def signed_name(value: str, token: str) -> str | None:
    """The name a reviewer cookie carries, when its signature holds under `token`."""
    name = value.partition(":")[2]
    return name if name and token and hmac.compare_digest(value, signed(name, token)) else None


def html(name: str, status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status)


def ask_html(status: int = 200, question: str = "", user: str = "", groups: str = "", **context) -> HTMLResponse:
    return html("ask.html", status, question=question, user=user, groups=groups, **context)


def add_pages(app: FastAPI, answerer, settings, admission, problem, shadowing) -> None:
    """Register the pages on the API's app; `admission`, `problem` and `shadowing` are the API's own, so
    limits match and questions asked here are shadowed like those asked through the API."""
    log = answerer.interactions
    max_chars = settings.serve_max_question_chars

    def reviewer_of(request: Request) -> str | None:
        return signed_name(request.cookies.get(REVIEWER_COOKIE, ""), settings.review_token)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def ask_page() -> HTMLResponse:
        return ask_html()

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def ask_form(request: Request, background: BackgroundTasks) -> HTMLResponse:
        fields = form_fields(await request.body())
        question, user, groups = first(fields, "question"), first(fields, "user").strip(), first(fields, "groups")
        form = dict(question=question, user=user, groups=groups)
        caller, caller_groups = user or "anonymous", groups.replace(",", " ").split()
        if not question.strip():
            return ask_html(422, error="The question is empty.", **form)
        if len(question) > max_chars:
            return ask_html(422, error=f"The question is {len(question)} characters; the limit is {max_chars}.", **form)
        try:
            async with admission.slot():
                answer = await run_in_threadpool(answerer.answer, question, caller, caller_groups)
        except problem as refused:
            return ask_html(refused.status, error=refused.message, **form)
        admission.observe(answer.latency_ms / 1000)
        shadowing.after(background, question, caller, caller_groups, answer.id)
        response = ask_html(answer=answer, **form)
        response.background = background
        return response

    @app.post("/rate", response_class=HTMLResponse, include_in_schema=False)
    async def rate_form(request: Request) -> HTMLResponse:
        fields = form_fields(await request.body())
        interaction_id, rating = first(fields, "id"), first(fields, "rating") or None
        correction = first(fields, "correction").strip() or None
        try:
            await run_in_threadpool(answerer.feedback, interaction_id, rating, correction, doc_ids_of(fields) or None)
        except KeyError:
            return ask_html(404, error=f"No interaction with id {interaction_id!r}.")
        except RecordError as bad:
            return ask_html(422, error=f"{bad}.")
        return ask_html(thanks=interaction_id, rating=rating, corrected=bool(correction))

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    async def review_page(request: Request, show: str = "unreviewed", done: str = "") -> HTMLResponse:
        if not settings.review_token:
            return html("review_off.html", 404)
        reviewer = reviewer_of(request)
        if reviewer is None:
            return html("review_login.html", 401, failed=bool(request.cookies.get(REVIEWER_COOKIE)))
        show = show if show in FILTERS else "unreviewed"
        records = await run_in_threadpool(log.records, RECENT, True)
        listed = review_queue(records, show, settings.review_low_similarity)
        chunk_ids = list({r["chunk_id"] for record, _ in listed for r in record["retrieved"] or () if r.get("chunk_id")})
        _, store, _ = answerer.live.current()
        chunks = await run_in_threadpool(store.chunks, chunk_ids)
        return html("review.html", reviewer=reviewer, show=show, filters=FILTERS, listed=listed, chunks=chunks, done=done)

    @app.post("/review/login", include_in_schema=False)
    async def review_login(request: Request):
        if not settings.review_token:
            return html("review_off.html", 404)
        fields = form_fields(await request.body())
        token, name = first(fields, "token"), first(fields, "name").strip()[:200]
        if not hmac.compare_digest(token.encode(), settings.review_token.encode()) or not name:
            return html("review_login.html", 401, failed=True)
        response = RedirectResponse("/review", status_code=303)
        response.set_cookie(
            REVIEWER_COOKIE,
            signed(name, settings.review_token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/review/{interaction_id:path}", include_in_schema=False)
    async def review_one(interaction_id: str, request: Request):
        if not settings.review_token:
            return html("review_off.html", 404)
        reviewer = reviewer_of(request)
        if reviewer is None:
            return html("review_login.html", 401, failed=True)
        fields = form_fields(await request.body())
        action, correction = first(fields, "action"), first(fields, "correction").strip()
        docs = doc_ids_of(fields)
        back = "/review?" + urlencode({"show": first(fields, "show", "unreviewed")})
        if action not in ("approve", "correct", "reject"):
            return html("review_error.html", 422, error=f"unknown review action {action!r}", back=back)
        if action == "correct" and not correction:
            return html("review_error.html", 422, error="a correction needs the corrected answer", back=back)
        _, store, _ = answerer.live.current()
        unknown = sorted(set(docs) - await run_in_threadpool(store.known_doc_ids, docs))
        if unknown:
            return html("review_error.html", 422, error=f"not in the index: {', '.join(unknown)}", back=back)
        rating = "down" if action == "reject" else "up"
        try:
            await run_in_threadpool(
                log.add_feedback, interaction_id, rating, correction if action == "correct" else None, docs or None, reviewer
            )
        except KeyError:
            return html("review_error.html", 404, error=f"no interaction with id {interaction_id!r}", back=back)
        return RedirectResponse(f"{back}&{urlencode({'done': interaction_id})}", status_code=303)
