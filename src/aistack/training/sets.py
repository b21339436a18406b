"""Training sets: label rows with their point-in-time features, split by time.

Train days, then a gap as long as the label delay (labels of those days are
not known yet when the model is trained), then test days, as the handbook does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import polars as pl
import pyarrow as pa

from aistack.contract import UseCase
from aistack.errors import ContractError
from aistack.features.gold import point_in_time_join
from aistack.lake.delta import Lake
from aistack.sql import quote


@dataclass
class TrainingSet:
    """Label rows with their point-in-time features, split by time."""

    frame: pd.DataFrame
    train: pd.DataFrame
    test: pd.DataFrame
    periods: dict[str, str]
    lineage: dict[str, int]


def label_spine(
    lake: Lake, use_case: UseCase, start: datetime, end: datetime, *, version: int
) -> pa.Table:
    """Label-table rows with start <= timestamp < end, in timestamp then id order."""
    labels = use_case.labels
    columns = dict.fromkeys(
        [labels.id, labels.timestamp, *labels.columns, labels.label]
    )
    select = ", ".join(quote(c) for c in columns)
    ts, ident = quote(labels.timestamp), quote(labels.id)
    con = lake.connect({labels.table: version})
    return con.sql(
        f"SELECT {select} FROM {labels.table} WHERE {ts} >= $start "
        f"AND {ts} < $end ORDER BY {ts}, {ident}",
        params={"start": start, "end": end},
    ).to_arrow_table()


def with_request_features(frame: pa.Table, use_case: UseCase) -> pd.DataFrame:
    """Add request-time features (the same polars expressions the server uses)."""
    df = pl.from_arrow(frame)
    assert isinstance(df, pl.DataFrame)
    exprs = [expr.alias(name) for name, expr in use_case.request_features.items()]
    return df.with_columns(exprs).to_pandas()


def split_periods(last_timestamp: datetime, use_case: UseCase) -> dict[str, datetime]:
    """Train / delay / test boundaries counted back from the last labelled day."""
    split = use_case.split
    end = datetime.combine(last_timestamp.date(), datetime.min.time()) + timedelta(
        days=1
    )
    test_start = end - timedelta(days=split.test_days)
    train_end = test_start - timedelta(days=split.delay_days)
    return {
        "train_start": train_end - timedelta(days=split.train_days),
        "train_end": train_end,
        "test_start": test_start,
        "test_end": end,
    }


def build_training_set(
    lake: Lake,
    use_case: UseCase,
    *,
    as_of: datetime,
    lineage: dict[str, int] | None = None,
) -> TrainingSet:
    """Point-in-time training set as of `as_of`, split by time.

    `lineage` pins the input tables (table -> version), e.g. to rebuild the
    training set of a registered model; default: the current versions.
    """
    labels = use_case.labels
    lineage = lineage or lake.versions(
        [labels.table, *(use_case.gold_table(v) for v in use_case.views)]
    )
    con = lake.connect({labels.table: lineage[labels.table]})
    last = con.execute(
        f"SELECT max({quote(labels.timestamp)}) FROM {labels.table}"
    ).fetchone()
    if last is None or last[0] is None:
        raise ContractError(f"{labels.table} holds no labelled rows")
    periods = split_periods(last[0], use_case)
    spine = label_spine(
        lake,
        use_case,
        periods["train_start"],
        periods["test_end"],
        version=lineage[labels.table],
    )
    joined = point_in_time_join(lake, use_case, spine, as_of=as_of, versions=lineage)
    frame = with_request_features(joined, use_case)
    ts = frame[labels.timestamp]
    train = frame[(ts >= periods["train_start"]) & (ts < periods["train_end"])]
    test = frame[(ts >= periods["test_start"]) & (ts < periods["test_end"])]
    for name, part in (("train", train), ("test", test)):
        if part[labels.label].nunique() < 2:  # noqa: PLR2004
            msg = (
                f"{name} period holds {len(part)} rows with a single label class; "
                "simulate or ingest more days"
            )
            raise ContractError(msg)
    return TrainingSet(
        frame, train, test, {k: v.isoformat() for k, v in periods.items()}, lineage
    )
