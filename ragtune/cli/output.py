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


def fail(args, message: str, code: int = 1, **extra) -> int:
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
