"""Training sets: label rows with their point-in-time features, split as declared.

By time (the default): train days, then a gap as long as the label delay
(labels of those days are not known yet when the model is trained), then test
days, as the handbook does; or rows in time order cut by fractions. Random,
stratified (per label value) and per-group splits cut a seeded permutation by
fractions. Rows are put in (timestamp, id) order first, so a split is the same
for the same rows and seed, whatever order the table returns them in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from aistack.contract import Resampling, UseCase
from aistack.engine import Engine
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
    valid: pd.DataFrame | None = None
    split: dict[str, object] = field(default_factory=dict)


def label_spine(
    lake: Lake, use_case: UseCase, start: datetime, end: datetime, *, version: int
) -> pa.Table:
    """Label-table rows with start <= timestamp < end, in timestamp then id order
    (rows without a clock: all of them, in id order)."""
    labels = use_case.labels
    clock = [labels.timestamp] if labels.timestamp else []
    columns = dict.fromkeys([labels.id, *clock, *labels.columns, labels.label])
    select = ", ".join(quote(c) for c in columns)
    order = ", ".join(quote(c) for c in labels.order)
    con = lake.connect({labels.table: version})
    if labels.timestamp is None:
        return con.sql(
            f"SELECT {select} FROM {labels.table} ORDER BY {order}"
        ).to_arrow_table()
    ts = quote(labels.timestamp)
    return con.sql(
        f"SELECT {select} FROM {labels.table} WHERE {ts} >= $start "
        f"AND {ts} < $end ORDER BY {order}",
        params={"start": start, "end": end},
    ).to_arrow_table()


def with_request_features(frame: pa.Table, use_case: UseCase) -> pd.DataFrame:
    """Add request-time features (the same polars expressions the server uses)."""
    df = pl.from_arrow(frame)
    assert isinstance(df, pl.DataFrame)
    exprs = [expr.alias(name) for name, expr in use_case.request_expressions.items()]
    return df.with_columns(exprs).to_pandas()


def split_periods(last_timestamp: datetime, use_case: UseCase) -> dict[str, datetime]:
    """Train / delay / test boundaries counted back from the last labelled day."""
    split = use_case.split
    if split.start is not None:  # anchored: forward from the declared start
        train_start = split.start
        train_end = train_start + timedelta(days=split.train_days)
        test_start = train_end + timedelta(days=split.delay_days)
        return {
            "train_start": train_start,
            "train_end": train_end,
            "test_start": test_start,
            "test_end": test_start + timedelta(days=split.test_days),
        }
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


def _cut(n: int, fractions: tuple[float, ...]) -> np.ndarray:
    """Part index (0 train, 1 valid/test, 2 test) of n ordered rows.

    Counts are rounded as RecBole does (`_calcu_split_ids`): each part gets
    floor(fraction * n) rows and the last part the rest.
    """
    bounds = np.cumsum([int(f * n) for f in fractions[:-1]])
    return np.searchsorted(bounds, np.arange(n), side="right")


def assign_parts(frame: pd.DataFrame, use_case: UseCase, *, seed: int) -> np.ndarray:
    """Part index per row of `frame` (in `Labels.order`) for a fraction split."""
    split = use_case.split
    fractions = split.parts
    n = len(frame)
    rng = np.random.default_rng(split.seed if split.seed is not None else seed)
    if split.kind == "time":
        return _cut(n, fractions)
    if split.kind == "random":
        parts = np.empty(n, dtype=np.int64)
        parts[rng.permutation(n)] = _cut(n, fractions)
        return parts
    column = use_case.labels.label if split.kind == "stratified" else split.group
    assert column is not None
    parts = np.empty(n, dtype=np.int64)
    codes = pd.factorize(frame[column], sort=True)[0]
    for code in np.unique(codes):  # each class / group in its own permutation
        rows = np.flatnonzero(codes == code)
        parts[rows[rng.permutation(len(rows))]] = _cut(len(rows), fractions)
    return parts


def drop_known_positives(
    frame: pd.DataFrame,
    test: pd.DataFrame,
    *,
    entity: str,
    label: str,
    timestamp: str,
    train_start: datetime,
    test_start: datetime,
    delay_days: int,
) -> pd.DataFrame:
    """`test` without the rows of entities known positive by their test day.

    Test day i starts at `test_start + i days`; an entity is known positive on it
    when one of its rows in `frame` with `train_start <= timestamp < day -
    delay_days` is labelled positive. This is the handbook's
    `get_train_test_set`: the train frauds, then one more day of the delay
    period per test day.
    """
    ts = frame[timestamp]
    positives = frame[(frame[label] == 1) & (ts >= train_start)]
    first = positives.groupby(entity)[timestamp].min()
    offset = (test[timestamp] - test_start) // pd.Timedelta(days=1)
    day = test_start + pd.to_timedelta(offset, unit="D")
    cutoff = day - pd.Timedelta(days=delay_days)
    known = test[entity].map(first)
    return test[~(known.notna() & (known < cutoff))]


def evaluated_rows(
    use_case: UseCase,
    frame: pd.DataFrame,
    test: pd.DataFrame,
    *,
    train_start: datetime,
    test_start: datetime,
) -> pd.DataFrame:
    """The rows of `test` the use case's evaluation protocol scores."""
    entity = use_case.evaluation.exclude_known_positives
    if entity is None:
        return test
    assert use_case.labels.timestamp is not None  # a time split (UseCase checks)
    return drop_known_positives(
        frame,
        test,
        entity=entity,
        label=use_case.labels.label,
        timestamp=use_case.labels.timestamp,
        train_start=train_start,
        test_start=test_start,
        delay_days=use_case.split.delay_days,
    )


def _digest(ids: pd.Series) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def labelled_frame(
    lake: Lake,
    use_case: UseCase,
    start: datetime,
    end: datetime,
    *,
    as_of: datetime,
    lineage: dict[str, int],
    engine: Engine | None = None,
) -> pd.DataFrame:
    """Label rows with start <= timestamp < end and their point-in-time features,
    in (timestamp, id) order."""
    labels = use_case.labels
    spine = label_spine(lake, use_case, start, end, version=lineage[labels.table])
    joined = point_in_time_join(
        lake, use_case, spine, as_of=as_of, versions=lineage, engine=engine
    )
    frame = with_request_features(joined, use_case)
    frame = frame.sort_values(labels.order, kind="stable")
    return frame.reset_index(drop=True)


def _last_time(lake: Lake, use_case: UseCase, lineage: dict[str, int]) -> datetime:
    """The label table's last timestamp (a time split counts back from its day)."""
    labels = use_case.labels
    assert labels.timestamp is not None  # a time split needs a clock (UseCase)
    con = lake.connect({labels.table: lineage[labels.table]})
    last = con.execute(
        f"SELECT max({quote(labels.timestamp)}) FROM {labels.table}"
    ).fetchone()
    if last is None or last[0] is None:
        raise ContractError(f"{labels.table} holds no labelled rows")
    return last[0]  # type: ignore[no-any-return]


def build_training_set(
    lake: Lake,
    use_case: UseCase,
    *,
    as_of: datetime,
    lineage: dict[str, int] | None = None,
    seed: int = 0,
    engine: Engine | None = None,
) -> TrainingSet:
    """Point-in-time training set as of `as_of`, split as the use case declares.

    `lineage` pins the input tables (table -> version), e.g. to rebuild the
    training set of a registered model; default: the current versions.
    """
    labels = use_case.labels
    lineage = lineage or lake.versions(
        [labels.table, *(use_case.gold_table(v) for v in use_case.views)]
    )
    split = use_case.split
    # a fraction split reads every labelled row
    periods = {"train_start": datetime.min, "test_end": datetime.max}
    if split.by_days:
        periods = split_periods(_last_time(lake, use_case, lineage), use_case)
    frame = labelled_frame(
        lake,
        use_case,
        periods["train_start"],
        periods["test_end"],
        as_of=as_of,
        lineage=lineage,
        engine=engine,
    )
    valid = None
    if split.by_days:
        ts = frame[labels.timestamp]
        train = frame[(ts >= periods["train_start"]) & (ts < periods["train_end"])]
        test = frame[(ts >= periods["test_start"]) & (ts < periods["test_end"])]
        test = evaluated_rows(
            use_case,
            frame,
            test,
            train_start=periods["train_start"],
            test_start=periods["test_start"],
        )
        recorded = {k: v.isoformat() for k, v in periods.items()}
    else:
        parts = assign_parts(frame, use_case, seed=seed)
        train = frame[parts == 0]
        test = frame[parts == len(split.parts) - 1]
        if len(split.parts) == 3:  # noqa: PLR2004
            valid = frame[parts == 1]
        recorded = {"split": split.kind}
    supervised = use_case.task in ("binary", "multiclass")
    for name, part in (("train", train), ("test", test)):
        if part.empty or (supervised and part[labels.label].nunique() < 2):  # noqa: PLR2004
            msg = (
                f"{name} part holds {len(part)} rows"
                + (" with a single label class" if supervised and len(part) else "")
                + "; ingest more rows or change the split"
            )
            raise ContractError(msg)
    record = {
        **split.record(),
        **use_case.evaluation.record(),
        "seed": split.seed if split.seed is not None else seed,
        "train_rows": len(train),
        "valid_rows": 0 if valid is None else len(valid),
        "test_rows": len(test),
        "test_ids_sha256": _digest(test[labels.id]),
    }
    return TrainingSet(frame, train, test, recorded, lineage, valid, record)


def resampled(
    train: pd.DataFrame, resampling: Resampling, *, label: str, seed: int
) -> pd.DataFrame:
    """`train` rebalanced as declared (positives: label 1), in its own row order.

    Only ever called on a training part: validation and test rows keep the
    class balance the model will meet.
    """
    rng = np.random.default_rng(seed)
    positive = np.flatnonzero(train[label].to_numpy() == 1)
    negative = np.flatnonzero(train[label].to_numpy() != 1)
    if resampling.kind == "undersample":
        keep = min(len(negative), round(resampling.ratio * len(positive)))
        rows = np.sort(np.concatenate([positive, rng.choice(negative, keep, False)]))
        return train.iloc[rows]
    wanted = round(len(negative) / resampling.ratio)
    extra = rng.choice(positive, max(wanted - len(positive), 0), replace=True)
    return train.iloc[np.concatenate([np.arange(len(train)), np.sort(extra)])]
