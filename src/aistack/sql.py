"""SQL text helpers: every identifier AI Stack writes into SQL goes through `quote`."""

from __future__ import annotations


def quote(name: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes escaped."""
    return '"' + name.replace('"', '""') + '"'
