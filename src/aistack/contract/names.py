"""Identifier checks shared by declarations."""

from __future__ import annotations

import re

from aistack.errors import DeclarationError

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


def _ident(kind: str, value: str) -> str:
    if not _IDENT.match(value):
        msg = f"{kind} {value!r}: expected a lower snake case identifier"
        raise DeclarationError(msg)
    return value
