"""PII protection: keyed pseudonyms, AES-GCM encryption, masked reads, erasure.

One master key (64 hex digits) lives outside the workspace, in the file or the
environment variable named in settings; two keys are derived from it, one for
pseudonyms (HMAC-SHA256) and one for encryption (AES-256-GCM, a random 96-bit
nonce per value). A value encrypted twice gives two different texts; a
pseudonym is the same for the same value, so a key column still joins.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aistack.contract import RankingUseCase, UseCase
from aistack.errors import ConfigError
from aistack.governance.keys import read_key
from aistack.lake.delta import Lake
from aistack.settings import Settings

NONCE_BYTES = 12
PREFIX = "enc1:"
"""Marks an encrypted value (version 1: base64 of nonce + ciphertext + tag)."""
MASK = "***"
"""What a reader without `read_pii` sees in place of an encrypted value."""
_AAD = b"aistack-pii-v1"


class PiiCipher:
    """Pseudonymises, encrypts and decrypts PII values with one master key."""

    def __init__(self, master_key: bytes) -> None:
        self.master_key = master_key

    def _derived(self, purpose: bytes) -> bytes:
        return hmac.new(self.master_key, purpose, hashlib.sha256).digest()

    def pseudonym(self, values: Sequence[str | None]) -> list[str | None]:
        """HMAC-SHA256 of each value, hex (None stays None)."""
        key = self._derived(b"pseudonym")
        return [
            None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest()
            for v in values
        ]

    def encrypt(self, values: Sequence[str | None]) -> list[str | None]:
        """AES-GCM with a fresh random nonce per value (None stays None)."""
        aes = AESGCM(self._derived(b"encrypt"))
        out: list[str | None] = []
        for v in values:
            if v is None:
                out.append(None)
                continue
            nonce = os.urandom(NONCE_BYTES)
            sealed = nonce + aes.encrypt(nonce, v.encode(), _AAD)
            out.append(PREFIX + base64.b64encode(sealed).decode())
        return out

    def decrypt(self, values: Sequence[str | None]) -> list[str | None]:
        """Each value encrypted by `encrypt`, in clear; a wrong key is an error."""
        aes = AESGCM(self._derived(b"encrypt"))
        out: list[str | None] = []
        for v in values:
            if v is None:
                out.append(None)
                continue
            if not v.startswith(PREFIX):
                raise ConfigError("pii: a protected column holds an unencrypted value")
            sealed = base64.b64decode(v.removeprefix(PREFIX))
            try:
                clear = aes.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _AAD)
            except InvalidTag:
                msg = (
                    "pii: cannot decrypt a protected value: the PII key is not the "
                    "one it was encrypted with (settings pii_key_file / pii_key_env)"
                )
                raise ConfigError(msg) from None
            out.append(clear.decode())
        return out


def load_cipher(settings: Settings, environ: Mapping[str, str]) -> PiiCipher:
    """The cipher of the master key named in settings; a clear error when absent.

    `pii_key_file` wins over the variable `pii_key_env` of `environ`. The key
    file must lie outside the workspace (a copied workspace must not carry it).
    """
    key = read_key(settings, "pii", environ)
    if key is None:
        msg = (
            f"pii_key_env: the environment variable {settings.pii_key_env} holding "
            "the PII master key is not set (or set pii_key_file); this use case "
            "declares PII columns and cannot run without it"
        )
        raise ConfigError(msg)
    return PiiCipher(key)


def source_pii(use_case: UseCase | RankingUseCase) -> dict[str, set[str]]:
    """Per source, the columns its silver tables declare PII (bronze encrypts
    them: a PII column keeps its source name)."""
    found: dict[str, set[str]] = {}
    for spec in use_case.silver:
        if spec.pii:
            found.setdefault(spec.source, set()).update(spec.pii)
    return found


def cipher_for(
    use_case: UseCase | RankingUseCase, settings: Settings, environ: Mapping[str, str]
) -> PiiCipher | None:
    """The PII cipher when `use_case` declares PII columns, else None (no key
    is needed, nor read)."""
    return load_cipher(settings, environ) if source_pii(use_case) else None


def protected_columns(use_case: UseCase | RankingUseCase, table: str) -> list[str]:
    """Columns of `table` holding encrypted values: every PII column in bronze,
    the `encrypt` ones in silver and quarantine."""
    layer, name = table.split(".", 1)
    found: list[str] = []
    for spec in use_case.silver:
        if layer == "bronze" and spec.source == name:
            found += [c for c in spec.pii if c not in found]
        elif layer in ("silver", "quarantine") and spec.name == name:
            found += [c for c, mode in spec.pii.items() if mode == "encrypt"]
    return found


def read_table(
    lake: Lake,
    use_case: UseCase | RankingUseCase,
    table: str,
    *,
    reveal_pii: bool,
    cipher: PiiCipher | None = None,
    version: int | None = None,
) -> pa.Table:
    """Read a table of `use_case` with its encrypted columns decrypted when
    `reveal_pii` (the reader holds `read_pii`; needs `cipher`) and masked
    otherwise. Pseudonyms are shown as stored: they reveal nothing."""
    data = lake.read(table, version=version)
    for column in protected_columns(use_case, table):
        if column not in data.column_names:
            continue
        values = data.column(column).to_pylist()
        if reveal_pii:
            if cipher is None:
                raise ConfigError(f"{table}: revealing PII needs the PII key")
            shown = cipher.decrypt(values)
        else:
            shown = [None if v is None else MASK for v in values]
        index = data.column_names.index(column)
        data = data.set_column(index, column, pa.array(shown, pa.string()))
    return data
