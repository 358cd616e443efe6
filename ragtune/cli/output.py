"""How every CLI command reports: one JSON object with --json, readable text otherwise, a spinner on long work."""

from __future__ import annotations

import json
import sys


def emit(args, payload: dict, render) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        render(payload)


BAD_INPUT_EXIT = 2  # what argparse exits with on bad arguments; 1 is for everything else that failed


def disk_hint(min_free_mb: int = 64) -> str:
    """Why a write failed, when the data home's disk is (nearly) full: SQLite says only "disk I/O error"."""
    import os

    from ragtune.settings import load_settings

    try:
        home = load_settings().home_dir
        while not home.exists():
            home = home.parent
        stat = os.statvfs(home)
    except (OSError, ValueError):
        return ""
    free_mb = stat.f_bavail * stat.f_frsize / 2**20
    if free_mb >= min_free_mb:
        return ""
    return (
        f" (no space left: the disk holding the data home {home} has {free_mb:.1f} MB free; free some and run "
        "the command again: what was written before the failure is kept, and a rerun finishes the rest)"
    )


def fail(args, message: str, code: int = 1, **extra) -> int:
    if code != BAD_INPUT_EXIT:
        message += disk_hint()
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message, **extra}, default=str))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


class status_spinner:
    """A spinner on stderr for long work, unless --json or not a terminal."""

    def __init__(self, args, message: str):
        self.enabled = not getattr(args, "json", False) and sys.stderr.isatty()
        self.message = message

    def __enter__(self):
        if self.enabled:
            from rich.console import Console

            self.status = Console(stderr=True).status(self.message)
            self.status.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.status.__exit__(*exc)
