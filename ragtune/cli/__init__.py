"""The `ragtune` command: the top layer, which may import every other one."""

from ragtune.cli.main import main

__all__ = ["main"]
