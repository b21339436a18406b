"""Gold tables a use case derives whole from silver by one pure transform.

The transform sees its silver inputs at their current versions; the table is
overwritten with its result and the versions go on the commit (lineage), with
a fingerprint of the transform's source. When the latest commit already holds
the same versions and fingerprint nothing is read or written, so a re-run on
the same inputs changes nothing, and a changed transform rebuilds the table.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable

import polars as pl

from aistack.contract import GoldTable
from aistack.errors import ConfigError, SchemaError
from aistack.features.gold import GoldResult
from aistack.lake.delta import Lake

TRANSFORM_KEY = "transform"
"""Key of the transform's fingerprint among a gold commit's inputs."""


def transform_fingerprint(transform: Callable[..., object]) -> str:
    """SHA-256 of the transform's source (its qualified name if it has none)."""
    try:
        source = inspect.getsource(transform)
    except (OSError, TypeError):
        source = getattr(transform, "__qualname__", repr(transform))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def build_derived(lake: Lake, gold: GoldTable, *, table: str) -> GoldResult:
    """Write `table` from `gold`'s transform, unless its inputs did not change."""
    lineage = lake.versions(gold.inputs.values())
    missing = sorted(set(gold.inputs.values()) - set(lineage))
    if missing:
        raise ConfigError(f"{table}: input {', '.join(missing)} does not exist yet")
    inputs: dict[str, int | str] = {
        **lineage,
        TRANSFORM_KEY: transform_fingerprint(gold.transform),
    }
    if lake.last_inputs(table) == inputs:
        return GoldResult(table, lake.version(table), 0, skipped=True)
    frames = {
        parameter: pl.from_arrow(lake.read(source, version=lineage[source]))
        for parameter, source in gold.inputs.items()
    }
    result = gold.transform(**frames)
    if not isinstance(result, pl.DataFrame):
        kind = type(result).__name__
        msg = f"{table}: the transform returned {kind}, expected a polars DataFrame"
        raise SchemaError(msg)
    _check_key(table, result, gold.key)
    version = lake.write(table, result.to_arrow(), mode="overwrite", inputs=inputs)
    return GoldResult(table, version, result.height, skipped=False)


def _check_key(table: str, frame: pl.DataFrame, key: tuple[str, ...]) -> None:
    """The key columns exist and no key repeats."""
    absent = [c for c in key if c not in frame.columns]
    if absent:
        raise SchemaError(f"{table}: key column {absent} is not in the result")
    if key and frame.select(key).is_duplicated().any():
        repeated = frame.filter(frame.select(key).is_duplicated()).row(0, named=True)
        shown = {c: repeated[c] for c in key}
        raise SchemaError(f"{table}: key {shown} repeats, expected one row per key")
