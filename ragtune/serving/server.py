"""The HTTP API: `POST /v1/ask`, `POST /v1/feedback`, `GET /healthz` (FastAPI on uvicorn), and the
web pages `/` (ask, rate, correct) and `/review` (ragtune/serving/pages.py).

One process holds one loaded model. Generation is CPU-bound and uses every core,
so at most `serve_workers` answers are generated at once and at most
`serve_queue` more wait; a request beyond that is answered 503 with Retry-After
at once instead of piling up in memory. A watcher thread follows the registry's
`champion` alias and swaps the model without touching requests in flight.

Shadowing (`shadow_share` > 0): after the caller has their answer, a share of live questions is
answered again by the `challenger` (logged with `shadow_of`, never shown). A shadow answer runs only
when no request is admitted (it never queues, so it never makes a caller wait behind the queue or turns
a caller away), takes a generation slot like an answer, and is skipped otherwise; the counts are in
/healthz. A caller that arrives while a shadow generates waits for at most that one answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ragtune.behaviour.interactions import RecordError
from ragtune.serving.answerer import Answerer
from ragtune.serving.pages import add_pages
from ragtune.settings import Settings

log = logging.getLogger(__name__)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(description="The question, in plain text.")
    user: str = Field("anonymous", max_length=200, description="Who asks: recorded with the interaction.")
    groups: list[str] = Field(default_factory=list, description="The caller's access groups; empty = public documents only.")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(description="The interaction id an answer returned.")
    rating: Literal["up", "down"] | None = Field(None, description="up, down, or null to clear.")
    correction: str | None = Field(None, max_length=4000, description="The answer that should have been given.")
    citations: list[str] | None = Field(
        None, max_length=20, description="The documents (ids) that answer the question; only those the answer was given from."
    )


class Problem(Exception):
    """A request the server refuses, with its HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def problem_response(status: int, message: str, problems: list | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": message, **({"problems": problems} if problems else {})}
    return JSONResponse(body, status_code=status, headers=headers)


class Admission:
    """At most `workers` requests generate at once and `queue` more wait; the rest are refused (503)."""

    def __init__(self, workers: int, queue: int):
        self.workers, self.limit = workers, workers + queue
        self.admitted = 0  # only touched on the event loop thread
        self._semaphore = asyncio.Semaphore(workers)
        self.mean_seconds = 5.0  # running estimate of one answer, for Retry-After

    def retry_after(self) -> int:
        return max(1, math.ceil(self.mean_seconds * self.limit / self.workers))

    @asynccontextmanager
    async def slot(self):
        if self.admitted >= self.limit:
            raise Problem(
                503,
                f"the server is busy ({self.admitted} requests admitted, limit {self.limit}); retry later",
                {"Retry-After": str(self.retry_after())},
            )
        self.admitted += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self.admitted -= 1

    def idle(self) -> bool:
        """No request admitted and a generation slot free: a shadow answer may run now without queueing."""
        return self.admitted == 0 and not self._semaphore.locked()

    @asynccontextmanager
    async def shadow_slot(self):
        """A generation slot for a shadow answer; the caller checked `idle()` in the same event-loop step."""
        async with self._semaphore:
            yield

    def observe(self, seconds: float) -> None:
        self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def state(self) -> dict:
        return {"admitted": self.admitted, "limit": self.limit, "workers": self.workers}


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused with 413 before anything parses it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.too_large(scope, receive, send)
        body, more = b"", True
        while more:  # buffer it (it is small by definition) so chunked bodies are limited too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self.too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def too_large(self, scope, receive, send):
        response = problem_response(413, f"request body over {self.max_bytes} bytes")
        await response(scope, receive, send)


def describe_validation(exc: RequestValidationError) -> tuple[int, list[dict]]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append({"field": where, "message": error.get("msg", "invalid")})
    invalid_json = any(e.get("type") == "json_invalid" for e in exc.errors())
    return (400 if invalid_json else 422), problems


def watch_champion(answerer: Answerer, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        for slot in filter(None, (answerer.slot, answerer.shadow_slot)):
            try:
                slot.sync()
            except Exception:  # sync keeps serving the old model; never let the watcher die
                log.exception("%s check failed", slot.alias)


class Shadowing:
    """Schedules the challenger's shadow answers after responses, within the admission limits."""

    def __init__(self, answerer: Answerer, admission: Admission, share: float, seed: int | None = None):
        self.answerer, self.admission, self.share = answerer, admission, share
        self.random = random.Random(seed)
        self.counts = {"answered": 0, "skipped_busy": 0, "no_challenger": 0, "failed": 0}

    def after(self, background: BackgroundTasks, question: str, user: str, groups: list[str], live_id: str) -> None:
        """Called once the caller's answer is ready: maybe answer it again, after the response is sent."""
        if self.answerer.shadow_slot is not None and self.random.random() < self.share:
            background.add_task(self.run, question, user, groups, live_id)

    async def run(self, question: str, user: str, groups: list[str], live_id: str) -> None:
        if not self.admission.idle():  # callers come first: never queue behind or ahead of them
            self.counts["skipped_busy"] += 1
            return
        try:
            async with self.admission.shadow_slot():
                shadow_id = await run_in_threadpool(self.answerer.shadow, question, user, groups, live_id)
        except Exception:  # a shadow answer must never surface anywhere but the log
            log.exception("shadow answer failed")
            self.counts["failed"] += 1
            return
        self.counts["answered" if shadow_id else "no_challenger"] += 1

    def state(self) -> dict:
        current = self.answerer.shadow_slot.current if self.answerer.shadow_slot else None
        return {"share": self.share, "challenger": current.version if current else None, **self.counts}


def create_app(answerer: Answerer, settings: Settings, watch: bool = True) -> FastAPI:
    admission = Admission(settings.serve_workers, settings.serve_queue)
    shadowing = Shadowing(answerer, admission, settings.shadow_share)
    max_chars = settings.serve_max_question_chars

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(answerer.slot.get)  # load the model before the first request
        if answerer.shadow_slot is not None:
            try:
                await run_in_threadpool(answerer.shadow_slot.sync)  # the challenger, if there is one
            except Exception:
                log.exception("could not load the challenger; the watcher retries")
        stop = threading.Event()
        watcher = threading.Thread(
            target=watch_champion, args=(answerer, settings.serve_reload_seconds, stop), name="champion-watcher", daemon=True
        )
        if watch:
            watcher.start()
        yield
        stop.set()

    app = FastAPI(
        title="ragtune", summary="Answers with citations from the champion adapter and the live index.", lifespan=lifespan
    )
    app.add_middleware(BodyLimit, max_bytes=settings.serve_max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        status, problems = describe_validation(exc)
        return problem_response(status, "malformed JSON body" if status == 400 else "invalid request", problems)

    @app.exception_handler(Problem)
    async def refused(_request: Request, exc: Problem):
        return problem_response(exc.status, exc.message, headers=exc.headers)

    @app.post("/v1/ask")
    async def ask(body: AskRequest, background: BackgroundTasks) -> dict:
        if not body.question.strip():
            raise Problem(422, "question is empty")
        if len(body.question) > max_chars:
            raise Problem(422, f"question is {len(body.question)} characters; the limit is {max_chars}")
        async with admission.slot():
            answer = await run_in_threadpool(answerer.answer, body.question, body.user, body.groups)
        admission.observe(answer.latency_ms / 1000)
        shadowing.after(background, body.question, body.user, body.groups, answer.id)
        return answer.as_dict()

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest) -> dict:
        try:
            await run_in_threadpool(answerer.feedback, body.id, body.rating, body.correction, body.citations)
        except KeyError:
            raise Problem(404, f"no interaction with id {body.id!r}") from None
        except RecordError as bad:
            raise Problem(422, str(bad)) from None
        return {"ok": True, "id": body.id, "rating": body.rating}

    add_pages(app, answerer, settings, admission, Problem, shadowing)

    @app.get("/healthz")
    async def healthz() -> dict:
        # one reading of the slot: the reload thread may change it while the index version is awaited below
        current, error = answerer.slot.current, answerer.slot.last_error
        return {
            # degraded: serving, but the registry cannot be followed (answers come from the model named here)
            "status": ("degraded" if error else "ok") if current else "loading",
            "model_version": current.version if current else None,
            "base_model": answerer.slot.base_model,
            "index_version": await run_in_threadpool(answerer.index_version),
            "reload_error": error,
            "queue": admission.state(),
            "shadow": shadowing.state(),
        }

    return app


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    answerer = Answerer.from_settings(settings)
    uvicorn.run(create_app(answerer, settings), host=host, port=port, log_level="info")
