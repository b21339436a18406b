"""Secret keys named in settings: read from a file outside the workspace or
from an environment variable, never from the workspace itself.

The PII master key and the audit signing key are configured the same way
(`<name>_key_file`, `<name>_key_env`); a copied workspace carries neither.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from aistack.errors import ConfigError
from aistack.settings import Settings

KEY_HEX_DIGITS = 64


def read_key(
    settings: Settings, field: Literal["pii", "audit"], environ: Mapping[str, str]
) -> bytes | None:
    """The 32-byte key of `<field>_key_file` or of the variable `<field>_key_env`
    in `environ`; None when neither is set.

    The file wins over the variable; errors name the setting (`pii_key_file:
    ...`). A file inside the workspace is refused.
    """
    file: Path | None = getattr(settings, f"{field}_key_file")
    env: str = getattr(settings, f"{field}_key_env")
    workspace = settings.workspace
    if file is not None:
        path = file.resolve()
        if path.is_relative_to(workspace.resolve()):
            msg = f"{field}_key_file: {path} is inside the workspace; keep it outside"
            raise ConfigError(msg)
        if not path.is_file():
            msg = f"{field}_key_file: {path} does not exist (the {field} key file)"
            raise ConfigError(msg)
        text, where = path.read_text().strip(), f"{field}_key_file {path}"
    elif environ.get(env):
        text, where = environ[env].strip(), f"{field}_key_env {env}"
    else:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(text) != KEY_HEX_DIGITS or len(key) * 2 != KEY_HEX_DIGITS:
        msg = f"{where}: the {field} key must be {KEY_HEX_DIGITS} hex digits"
        raise ConfigError(msg)
    return key


def new_key_file(path: Path) -> Path:
    """Write a fresh random key to `path` (mode 0600) and return it."""
    path.write_text(os.urandom(KEY_HEX_DIGITS // 2).hex() + "\n")
    path.chmod(0o600)
    return path
