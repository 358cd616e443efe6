"""The interaction log: every question asked, every answer given, and the feedback on it.

Stored in a SQL database through SQLAlchemy: by default one sqlite file in the
data home (`RAGTUNE_INTERACTIONS_URL` points it at PostgreSQL or any server
database instead). sqlite in WAL mode lets many processes append at once: each
write is one short transaction, and writers queue on the database lock (with a
busy timeout) instead of failing, so nothing is lost or written twice.

The log is append-only: interactions are inserted once (a repeated id is
ignored), feedback is a separate stream of events whose newest entry wins, except that a
review outranks end users: once reviewed, only a later review changes the rating, correction and
named documents (a user's later vote is kept apart, as `user_feedback`).
The one exception is `forget(user)`, which deletes, because erasure is the point.

A review (the server's /review page) is a feedback event with the reviewer's name; it may name
the documents that really answer the question (`gold_citations`), which curation then takes as the
gold documents. A shadow answer (the challenger answering a live question off the request path) is
logged with `shadow_of` set to the interaction it shadows; it is never shown and never trained on.

Databases created before a column existed get it on open (`add_missing_columns`): every column added
since the first release is nullable, so old rows read back with None.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ragtune.jsonl import iter_jsonl
from ragtune.locks import exclusive_lock

FEEDBACK_VALUES = ("up", "down")
UPSERT_DIALECTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # insert-or-ignore by id
RECORD_FIELDS = (
    "id",
    "ts",
    "user",
    "question",
    "answer",
    "citations",
    "model_version",
    "index_version",
    "latency_ms",
    "retrieved",
    "fallback",
    "below_floor",
    "shadow_of",
    "feedback",
    "correction",
    "gold_citations",
    "reviewer",
)
FEEDBACK_FIELDS = ("feedback", "correction", "gold_citations", "reviewer")  # from the feedback events
OPTIONAL_FIELDS = (
    "retrieved",
    "fallback",
    "below_floor",
    "shadow_of",
    "gold_citations",
    "reviewer",
)  # since the review page: a file may omit them

metadata = sa.MetaData()
interactions = sa.Table(
    "interactions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("user", sa.String(200), nullable=False, index=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("citations", sa.Text, nullable=False),  # JSON list of {doc_id, chunk_id}
    sa.Column("model_version", sa.String(64)),
    sa.Column("index_version", sa.String(64)),
    sa.Column("latency_ms", sa.Float),
    sa.Column("retrieved", sa.Text),  # JSON list of {doc_id, chunk_id, score, similarity}: the context, best first
    sa.Column("fallback", sa.Boolean),  # the model's reply was not answer JSON
    sa.Column("below_floor", sa.Boolean),  # declined without asking the model: the context was below the floor
    sa.Column("shadow_of", sa.String(64)),  # a shadow answer: the live interaction it shadows
)
feedback_events = sa.Table(
    "feedback",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("interaction_id", sa.String(64), nullable=False, index=True),
    sa.Column("rating", sa.String(8)),
    sa.Column("correction", sa.Text),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("citations", sa.Text),  # JSON list of doc ids a reviewer named as the ones that answer
    sa.Column("reviewer", sa.String(200)),
)
forgotten_users = sa.Table(
    "forgotten_users",
    metadata,
    sa.Column("user", sa.String(200), primary_key=True),
    sa.Column("ts", sa.String(40), nullable=False),
)


class RecordError(ValueError):
    """An interaction record that does not fit the format in docs/design.md."""


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    already_present: int = 0
    forgotten: int = 0  # records of users who asked to be forgotten: never stored again
    bad_lines: list[dict] = field(default_factory=list)  # {line, reason}

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "added": self.added,
            "already_present": self.already_present,
            "forgotten": self.forgotten,
            "bad_lines": self.bad_lines,
        }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def utc_iso(ts) -> str:
    """A timestamp as ISO 8601 in UTC, so records sort by time whatever offset they were logged with."""
    if ts in (None, ""):
        return now_iso()
    try:
        parsed = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError as exc:
        raise RecordError(f"ts is not an ISO 8601 timestamp: {ts!r}") from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def normalise_record(raw: dict) -> dict:
    """Validate one interaction record and fill the optional fields; raises RecordError."""
    if not isinstance(raw, dict):
        raise RecordError("a record must be a JSON object")
    for name in ("question", "answer"):
        if not isinstance(raw.get(name), str):
            raise RecordError(f"field {name!r} must be a string")
    feedback = raw.get("feedback")
    if feedback not in (None, *FEEDBACK_VALUES):
        raise RecordError(f"feedback must be 'up', 'down' or null, not {feedback!r}")
    citations = raw.get("citations") or []
    if not isinstance(citations, list) or not all(isinstance(c, dict) and c.get("doc_id") for c in citations):
        raise RecordError("citations must be a list of objects with a doc_id")
    latency = raw.get("latency_ms")
    if latency is not None and not isinstance(latency, (int, float)):
        raise RecordError("latency_ms must be a number or null")
    correction = raw.get("correction")
    if correction is not None and not isinstance(correction, str):
        raise RecordError("correction must be a string or null")
    retrieved = raw.get("retrieved") or []
    if not isinstance(retrieved, list) or not all(isinstance(r, dict) and r.get("doc_id") for r in retrieved):
        raise RecordError("retrieved must be a list of objects with a doc_id")
    gold = raw.get("gold_citations")
    if gold is not None and not (isinstance(gold, list) and all(isinstance(d, str) and d for d in gold)):
        raise RecordError("gold_citations must be a list of document ids or null")
    for flag in ("fallback", "below_floor"):
        if raw.get(flag) not in (None, True, False):
            raise RecordError(f"{flag} must be true, false or null")
    return {
        "id": str(raw.get("id") or uuid.uuid4().hex),
        "ts": utc_iso(raw.get("ts")),
        "user": str(raw.get("user") or "anonymous"),
        "question": raw["question"],
        "answer": raw["answer"],
        "citations": [{"doc_id": str(c["doc_id"]), "chunk_id": c.get("chunk_id")} for c in citations],
        "model_version": None if raw.get("model_version") is None else str(raw["model_version"]),
        "index_version": None if raw.get("index_version") is None else str(raw["index_version"]),
        "latency_ms": None if latency is None else float(latency),
        "retrieved": [
            {"doc_id": str(r["doc_id"]), **{k: r[k] for k in ("chunk_id", "score", "similarity") if k in r}} for r in retrieved
        ],
        "fallback": raw.get("fallback"),
        "below_floor": raw.get("below_floor"),
        "shadow_of": None if raw.get("shadow_of") is None else str(raw["shadow_of"]),
        "feedback": feedback,
        "correction": correction,
        "gold_citations": gold,
        "reviewer": None if raw.get("reviewer") is None else str(raw["reviewer"]),
    }


def make_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection, _record):  # WAL: readers never block the writer, writers queue
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    return engine


def add_missing_columns(engine: sa.Engine) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for each column of `metadata` an existing table lacks (all of them nullable)."""
    inspector = sa.inspect(engine)
    added = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                    added.append(f"{table.name}.{column.name}")
    return added


class InteractionLog:
    """Append interactions and feedback; read them back with the newest feedback applied."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        if url.startswith("sqlite:///"):
            # Processes starting at once would race on CREATE TABLE (check, then create):
            # a lock file beside the database makes the check-and-create one step.
            database = Path(url.removeprefix("sqlite:///"))
            with exclusive_lock(database.with_name(database.name + ".schema.lock")):
                metadata.create_all(self.engine)
                add_missing_columns(self.engine)
        else:
            try:
                metadata.create_all(self.engine)
                add_missing_columns(self.engine)
            except sa.exc.DBAPIError as exc:  # another process created a table or column a moment ago
                if "already exists" not in str(exc):
                    raise
                metadata.create_all(self.engine)
                add_missing_columns(self.engine)

    # -- writes ------------------------------------------------------------
    def append(self, record: dict) -> tuple[str, bool]:
        """Insert one record (validated); returns (id, added). A known id is left as it was."""
        record = normalise_record(record)
        return record["id"], bool(self.extend([record]))

    def extend(self, records: list[dict]) -> int:
        """Insert many records in one transaction (validated first); returns how many were new."""
        forgotten = self.forgotten()
        records = [r for r in map(normalise_record, records) if r["user"] not in forgotten]
        added = 0
        with self.engine.begin() as conn:
            for record in records:
                row, feedback = self._row(record)
                if self._insert(conn, row):  # a repeated id keeps the record and feedback it has
                    added += 1
                    if feedback:
                        conn.execute(feedback_events.insert(), [feedback])
        return added

    def import_jsonl(self, path: Path) -> ImportReport:
        """Import a JSONL file; malformed lines are skipped and reported with their reason."""
        report, good = ImportReport(), []
        for n, row, problem in iter_jsonl(path):
            report.read += 1
            try:
                if problem:
                    raise RecordError(problem)
                good.append(normalise_record(row))
            except RecordError as e:
                report.bad_lines.append({"line": n, "reason": str(e)})
        forgotten = self.forgotten()
        report.forgotten = sum(r["user"] in forgotten for r in good)
        report.added = self.extend(good)
        report.already_present = len(good) - report.forgotten - report.added
        return report

    def add_feedback(
        self,
        interaction_id: str,
        rating: str | None,
        correction: str | None = None,
        citations: list[str] | None = None,
        reviewer: str | None = None,
    ) -> None:
        """Append one feedback event. `citations`: the documents that really answer (a reviewer's call);
        `reviewer`: who reviewed (None for an end user's vote)."""
        if rating not in (None, *FEEDBACK_VALUES):
            raise RecordError(f"rating must be 'up' or 'down', not {rating!r}")
        if citations is not None and not all(isinstance(d, str) and d for d in citations):
            raise RecordError("citations must be a list of document ids")
        event = {
            "interaction_id": interaction_id,
            "rating": rating,
            "correction": correction,
            "ts": now_iso(),
            "citations": None if citations is None else json.dumps(list(dict.fromkeys(citations))),
            "reviewer": reviewer,
        }
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(interactions.c.id).where(interactions.c.id == interaction_id)).first()
            if found is None:
                raise KeyError(f"no interaction with id {interaction_id!r}")
            conn.execute(feedback_events.insert(), [event])

    def forget(self, user: str) -> int:
        """Delete every record of `user` and remember the user, so a later import cannot bring them back."""
        with self.engine.begin() as conn:
            ids = sa.select(interactions.c.id).where(interactions.c.user == user)
            conn.execute(feedback_events.delete().where(feedback_events.c.interaction_id.in_(ids)))
            removed = conn.execute(interactions.delete().where(interactions.c.user == user)).rowcount
            if conn.execute(sa.select(forgotten_users.c.user).where(forgotten_users.c.user == user)).first() is None:
                conn.execute(forgotten_users.insert(), [{"user": user, "ts": now_iso()}])
        return removed

    # -- reads -------------------------------------------------------------
    def records(
        self,
        limit: int | None = None,
        newest_first: bool = False,
        ids: list[str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict]:
        """Records with their newest feedback; `ids` keeps those ids, `since` those logged at or after an ISO time,
        `until` those logged before one (a day's report reads one day, not everything after it)."""
        order = interactions.c.seq.desc() if newest_first else interactions.c.seq
        query = sa.select(interactions).order_by(order).limit(limit)
        if ids is not None:
            query = query.where(interactions.c.id.in_(ids))
        if since is not None:
            query = query.where(interactions.c.ts >= since)
        if until is not None:
            query = query.where(interactions.c.ts < until)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            latest = self._latest_feedback(conn, [r["id"] for r in rows])
        return [self._as_record(r, latest.get(r["id"])) for r in rows]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(interactions)).scalar_one()

    def forgotten(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(forgotten_users.c.user)).scalars())

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _row(r: dict) -> tuple[dict, dict | None]:
        row = {
            k: (json.dumps(r[k]) if k in ("citations", "retrieved") else r[k]) for k in RECORD_FIELDS if k not in FEEDBACK_FIELDS
        }
        if all(r.get(k) is None for k in FEEDBACK_FIELDS):
            return row, None
        return row, {
            "interaction_id": r["id"],
            "rating": r.get("feedback"),
            "correction": r.get("correction"),
            "ts": r["ts"],
            "citations": None if r.get("gold_citations") is None else json.dumps(r["gold_citations"]),
            "reviewer": r.get("reviewer"),
        }

    @staticmethod
    def _insert(conn, row: dict) -> int:
        insert = UPSERT_DIALECTS.get(conn.dialect.name)
        if insert is None:  # other servers: callers filter known ids first (import_jsonl does)
            return conn.execute(interactions.insert(), [row]).rowcount
        return conn.execute(insert(interactions).on_conflict_do_nothing(index_elements=["id"]), [row]).rowcount

    @staticmethod
    def _latest_feedback(conn, ids: list[str]) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        for start in range(0, len(ids), 500):
            query = (
                sa.select(feedback_events)
                .where(feedback_events.c.interaction_id.in_(ids[start : start + 500]))
                .order_by(feedback_events.c.seq)
            )
            for row in conn.execute(query):
                entry = latest.setdefault(row.interaction_id, {**dict.fromkeys(FEEDBACK_FIELDS), "user_feedback": None})
                named = json.loads(row.citations) if row.citations else None
                if row.reviewer:  # a review decides, until a later review
                    entry.update(feedback=row.rating, correction=row.correction, reviewer=row.reviewer)
                    entry["gold_citations"] = named or entry["gold_citations"]
                    continue
                entry["user_feedback"] = row.rating  # what end users said, apart from reviews (the live report's votes)
                if entry["reviewer"] is None:  # a user's vote never undoes a review
                    entry.update(feedback=row.rating, correction=row.correction)
                    entry["gold_citations"] = named or entry["gold_citations"]
        return latest

    @staticmethod
    def _as_record(row: dict, feedback: dict | None) -> dict:
        record = {k: row[k] for k in RECORD_FIELDS if k in row}
        record["citations"] = json.loads(row["citations"])
        # None: logged before the context was kept (unknown), unlike [] (nothing was retrieved)
        record["retrieved"] = None if row.get("retrieved") is None else json.loads(row["retrieved"])
        record.update(feedback or {**dict.fromkeys(FEEDBACK_FIELDS), "user_feedback": None})
        return record
