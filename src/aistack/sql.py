"""SQL text helpers: every identifier AI Stack writes into SQL goes through `quote`.

DuckDB and PostgreSQL quote identifiers the same way (standard SQL).
"""

from __future__ import annotations


def quote(name: str) -> str:
    """A SQL identifier, double-quoted with embedded quotes escaped."""
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(name: str) -> str:
    """A possibly schema-qualified name (`schema.table`), each part quoted."""
    return ".".join(quote(part) for part in name.split("."))
