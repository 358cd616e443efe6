"""An exclusive lock between processes sharing a data home: a file held with flock.

Used where two commands started at once must not both do one thing: create the Dagster
instance's tables, convert the bundled model, write one index.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: Path):
    """Hold `path` (created if missing) until the block ends; closing the file releases the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
