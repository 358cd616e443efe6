"""Which chunk table is live, and which embedder built it: a pointer switched in one atomic step.

    live, store, embedder = open_live(settings)   # the live table and the embedder that built it, read together
    switch_live(settings, green, reason)          # blue/green: readers now get `green`; the old table is kept
    read_previous(settings)                       # what a rollback switches back to (knowledge/blue_green.py)

Vectors from two embedders are not comparable: a query embedded by one model and searched against
chunks embedded by another returns confident nonsense. So every table is tied to the embedder that
built it, by the fingerprint of its weights, and every reader and writer (a refresh, the RAFT
builder, the harness, the server) takes the embedder from here. A process whose embedder differs
from the live table's gets `EmbedderMismatch`, never a silent mix.

The pointer is a small JSON file in the data home (`index/<table>.live.json`), replaced with
os.replace, so a reader sees the old pointer or the new one and nothing in between. Without a
pointer (an index built before blue/green), the live table is RAGTUNE_TABLE_NAME read with the
configured embedder; the first refresh records its fingerprint.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ragtune.knowledge.embedder import Embedder, load_embedder
from ragtune.knowledge.store import ChunkStore
from ragtune.settings import Settings

BASE = "base"  # the embedder_version of the configured (not fine-tuned) embedder


class EmbedderMismatch(RuntimeError):
    """The embedder about to read or write a table is not the one that built it."""


@dataclass(frozen=True)
class LiveIndex:
    table: str
    embedder_path: str  # absolute once read; stored empty for the configured embedder, relative to the data home otherwise
    embedder_version: str = BASE  # a version of the registered embedder model, or "base"
    fingerprint: str = ""  # of the embedder's weights; empty until a refresh records it
    switched_at: str = ""
    reason: str = ""

    def label(self, table_version: int | str) -> str:
        """The index version as interactions and reports name it: the table version, and the embedder
        version when it is not the base one (`12`, `3@embedder-2`)."""
        return str(table_version) if self.embedder_version == BASE else f"{table_version}@embedder-{self.embedder_version}"


def resolved(settings: Settings, entry: dict) -> LiveIndex:
    """A pointer entry with its embedder path made absolute: the configured embedder for `base` (so a moved
    virtual environment or RAGTUNE_EMBEDDER still finds it), a fine-tuned one inside the data home."""
    live = LiveIndex(**entry)
    if live.embedder_version == BASE:
        return replace(live, embedder_path=settings.embedder_path())
    path = Path(live.embedder_path)
    return replace(live, embedder_path=str(path if path.is_absolute() else settings.home_dir / path))


def stored(settings: Settings, live: LiveIndex) -> dict:
    """What the pointer keeps of `live`: no machine-specific path for the configured embedder, a path
    relative to the data home for a fine-tuned one."""
    path = Path(live.embedder_path)
    if live.embedder_version == BASE:
        path = Path("")
    elif path.is_relative_to(settings.home_dir):
        path = path.relative_to(settings.home_dir)
    return asdict(replace(live, embedder_path=str(path) if str(path) != "." else ""))


def pointer_path(settings: Settings) -> Path:
    return settings.home_dir / "index" / f"{settings.table_name}.live.json"


def read_pointer(settings: Settings) -> dict:
    path = pointer_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def read_live(settings: Settings) -> LiveIndex:
    """The live table and its embedder (the configured ones when no switch was ever made)."""
    live = read_pointer(settings).get("live")
    if live:
        return resolved(settings, live)
    return LiveIndex(table=settings.table_name, embedder_path=settings.embedder_path())


def read_previous(settings: Settings) -> LiveIndex:
    """The table live before the last switch (kept for a rollback); ValueError when there was none."""
    previous = read_pointer(settings).get("previous")
    if not previous:
        raise ValueError("no earlier live index to switch back to (no embedder swap was ever made)")
    return resolved(settings, previous)


def write_pointer(settings: Settings, pointer: dict) -> None:
    path = pointer_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(pointer, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_fingerprint(settings: Settings, fingerprint: str) -> LiveIndex:
    """Tie the live table to the embedder that wrote it (the first refresh of an index without a pointer)."""
    pointer = read_pointer(settings)
    live = read_live(settings)
    if live.fingerprint:
        return live
    live = replace(live, fingerprint=fingerprint, switched_at=live.switched_at or now())
    write_pointer(settings, {**pointer, "live": stored(settings, live)})
    return live


def check_embedder(live: LiveIndex, fingerprint: str, path: str) -> None:
    """Refuse an embedder that did not build the live table."""
    if live.fingerprint and fingerprint != live.fingerprint:
        raise EmbedderMismatch(
            f"the live index table {live.table!r} was built with embedder {live.embedder_version} "
            f"(weights {live.fingerprint}); this process loaded {path} (weights {fingerprint}). "
            "Vectors of two embedders cannot be mixed: set RAGTUNE_EMBEDDER back to the embedder that built the "
            "index, or start a new index (another RAGTUNE_TABLE_NAME) with the new one."
        )


def embedder_for(settings: Settings, live: LiveIndex | None = None) -> Embedder:
    """The embedder that built the live table, in the settings' precision. After a swap that is the fine-tuned
    version the pointer names; before one, the configured embedder (RAGTUNE_EMBEDDER or the bundled MiniLM),
    refused with EmbedderMismatch when it is not the one the table was built with."""
    live = live or read_live(settings)
    embedder = load_embedder(live.embedder_path, settings.embed_batch_size, settings.dtype)
    check_embedder(live, embedder.fingerprint, live.embedder_path)
    return embedder


def open_live(settings: Settings) -> tuple[LiveIndex, ChunkStore, Embedder]:
    """The live table and its embedder from one reading of the pointer, so the two always belong together."""
    live = read_live(settings)
    embedder = embedder_for(settings, live)
    return live, ChunkStore(settings.lancedb_uri, live.table, embedder.dim), embedder


def switch_live(settings: Settings, new: LiveIndex, reason: str = "") -> dict:
    """Make `new` the live table in one atomic step; the one it replaces is kept as `previous`. Callers hold
    the index write lock (knowledge/blue_green.py), so no refresh is writing the table being replaced."""
    pointer = read_pointer(settings)
    old = read_live(settings)
    new = replace(new, switched_at=now(), reason=reason)
    entry = {"at": new.switched_at, "table": new.table, "embedder_version": new.embedder_version, "from_table": old.table}
    history = pointer.get("history", [])[-49:] + [{**entry, "reason": reason}]
    write_pointer(settings, {"live": stored(settings, new), "previous": stored(settings, old), "history": history})
    return {"live": asdict(new), "previous": asdict(old)}


def live_store(settings: Settings, dim: int = 384) -> ChunkStore:
    """The live chunk table (created with `dim` on first write), for readers that need no embedder."""
    return ChunkStore(settings.lancedb_uri, read_live(settings).table, dim)
