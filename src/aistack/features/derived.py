"""Gold tables a use case derives whole from silver by one pure transform.

The transform sees its silver inputs at their current versions; the table is
overwritten with its result and the versions go on the commit (lineage). When
the latest commit already holds the same versions nothing is read or written,
so a re-run on the same inputs changes nothing.
"""

from __future__ import annotations

import polars as pl

from aistack.contract import GoldTable
from aistack.errors import ConfigError, SchemaError
from aistack.features.gold import GoldResult
from aistack.lake.delta import Lake


def build_derived(lake: Lake, gold: GoldTable, *, table: str) -> GoldResult:
    """Write `table` from `gold`'s transform, unless its inputs did not change."""
    lineage = lake.versions(gold.inputs.values())
    missing = sorted(set(gold.inputs.values()) - set(lineage))
    if missing:
        raise ConfigError(f"{table}: input {', '.join(missing)} does not exist yet")
    if lake.last_inputs(table) == lineage:
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
    version = lake.write(table, result.to_arrow(), mode="overwrite", inputs=lineage)
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
