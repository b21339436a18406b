"""Online/offline consistency: served feature values against their offline definition.

For logged predictions whose events have since landed in silver, the offline
features are recomputed (aggregation views by their compiled SQL over silver,
request-time features by their polars expressions, SQL views by the
point-in-time join) and compared with the values the server logged. Per
feature: the mismatch rate (values differ beyond a relative tolerance), the
missing rate (one side NULL, the other not) and the largest difference. This is
how Airbnb's Chronon measures consistency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from aistack.contract import AggregationView, FeatureView, UseCase
from aistack.errors import ConfigError
from aistack.features.gold import aggregation_rows, point_in_time_join
from aistack.lake.delta import Lake
from aistack.serving.log import FEATURE_PREFIX, prediction_log_table
from aistack.sql import quote
from aistack.training.sets import with_request_features

_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class FeatureConsistency:
    """One feature over the compared predictions."""

    feature: str
    compared: int
    mismatch_rate: float
    missing_rate: float
    max_abs_diff: float


@dataclass
class ConsistencyReport:
    """What `check_consistency` found."""

    logged: int
    compared: int
    late: int
    features: list[FeatureConsistency] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """Every feature matched on every compared prediction."""
        return all(f.mismatch_rate == 0 and f.missing_rate == 0 for f in self.features)

    def frame(self) -> pd.DataFrame:
        """One row per feature."""
        return pd.DataFrame([f.__dict__ for f in self.features])


def check_consistency(
    lake: Lake,
    use_case: UseCase,
    *,
    since: datetime | None = None,
    rel_tol: float = 1e-9,
) -> ConsistencyReport:
    """Compare logged served features with their recomputed offline values."""
    table = prediction_log_table(use_case)
    if not lake.exists(table):
        raise ConfigError(f"{table} does not exist: serve or stream some events first")
    names = use_case.feature_names
    window = None if since is None else pc.field("logged_at") >= pa.scalar(since)
    log = lake.read(table, where=window).to_pandas()  # only the window
    log = log[~log["route"].str.endswith("_shadow")]
    missing = [f for f in names if FEATURE_PREFIX + f not in log.columns]
    if missing:
        msg = f"{table} has no logged values of {', '.join(missing)} (older server?)"
        raise ConfigError(msg)
    log = log[log["event_id"].notna()]
    offline = _offline(lake, use_case, log["event_id"].unique().tolist())
    joined = log.merge(offline, left_on="event_id", right_on="_event_key")
    report = ConsistencyReport(
        len(log), len(joined), int((joined["late"].fillna("") != "").sum())
    )
    for name in names:
        served = joined[FEATURE_PREFIX + name].to_numpy(dtype=float)
        truth = joined[name].to_numpy(dtype=float)
        report.features.append(_compare(name, served, truth, rel_tol))
    return report


def _compare(
    name: str, served: np.ndarray, truth: np.ndarray, rel_tol: float
) -> FeatureConsistency:
    n = len(served)
    if n == 0:
        return FeatureConsistency(name, 0, 0.0, 0.0, 0.0)
    s_nan, t_nan = np.isnan(served), np.isnan(truth)
    one_missing = s_nan != t_nan
    both = ~s_nan & ~t_nan
    diff = np.abs(served[both] - truth[both])
    scale = np.maximum(np.abs(served[both]), np.abs(truth[both]))
    differ = diff > np.maximum(rel_tol * scale, 1e-12)
    largest = float(diff.max()) if diff.size else 0.0
    return FeatureConsistency(
        name,
        n,
        float((differ.sum() + one_missing.sum()) / n),
        float(one_missing.sum() / n),
        largest if math.isfinite(largest) else float("inf"),
    )


def _offline(lake: Lake, use_case: UseCase, event_ids: list[str]) -> pd.DataFrame:
    """Offline features of the logged events found in the label table."""
    labels = use_case.labels
    version = lake.version(labels.table)
    if version is None or not event_ids:
        return pd.DataFrame(columns=["_event_key", *use_case.feature_names])
    con = lake.connect({labels.table: version})
    con.register("logged", pa.table({"_event_key": pa.array(event_ids, pa.string())}))
    ident = quote(labels.id)
    columns = ", ".join(
        quote(c) for c in dict.fromkeys([*labels.order, *labels.columns])
    )
    order = ", ".join(quote(c) for c in labels.order)
    spine = con.sql(
        f"SELECT {columns}, CAST({ident} AS VARCHAR) AS _event_key FROM "
        f"{labels.table} s JOIN logged l ON CAST(s.{ident} AS VARCHAR) = l._event_key "
        f"ORDER BY {order}"
    ).to_arrow_table()
    if spine.num_rows == 0:
        return pd.DataFrame(columns=["_event_key", *use_case.feature_names])
    frame = with_request_features(spine, use_case)
    if labels.timestamp is None:  # rows without a clock carry their own features
        return frame[["_event_key", *use_case.feature_names]]
    ts = quote(labels.timestamp)
    first = con.execute(
        f"SELECT epoch_us(min({ts})) FROM {labels.table} s JOIN logged l "
        f"ON CAST(s.{ident} AS VARCHAR) = l._event_key"
    ).fetchall()[0]
    start = int(first[0]) if first and first[0] is not None else 0
    for view in use_case.views:
        if isinstance(view, AggregationView):
            vcon = lake.connect(
                {view.source: lake.versions([view.source])[view.source]}
            )
            vcon.register("logged", pa.table({"_event_key": pa.array(event_ids)}))
            since = f"epoch_us({quote(view.timestamp)}) > {start - view.span // _US}"
            names = ", ".join(quote(f) for f in view.feature_names)
            found = aggregation_rows(vcon, view, since=since).read_all()
            vcon.register("view_rows", found)
            rows = vcon.sql(
                f"SELECT CAST({quote(view.id)} AS VARCHAR) AS _event_key, {names} "
                "FROM view_rows f "
                f"WHERE CAST({quote(view.id)} AS VARCHAR) IN "
                "(SELECT _event_key FROM logged)"
            ).to_df()
            frame = frame.merge(rows, on="_event_key", how="left")
    sql_views = [v for v in use_case.views if isinstance(v, FeatureView)]
    if sql_views:
        pit = point_in_time_join(
            lake, use_case, spine.drop_columns(["_event_key"]), as_of=datetime.now(UTC)
        ).to_pandas()
        for view in sql_views:
            for name in view.feature_names:
                frame[name] = pit[name].to_numpy()
    return frame[["_event_key", *use_case.feature_names]]
