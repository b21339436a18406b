"""Test-only use cases of other tasks: multi-class, regression, anomaly scoring.

Each is a plain table of rows that carry their own features: no entity, no
feature view (`row_features`), split by rows rather than by days. The sensors
rows have no clock at all (no timestamp column anywhere). They are
registered as plugins (entry points) by the tests that serve them, as a user's
package would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import numpy as np
import pandera.polars as pa_pl
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, Field, create_model
from sklearn.datasets import load_diabetes, load_wine
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aistack.contract import (
    Batch,
    Gates,
    Labels,
    Serving,
    SilverTable,
    Split,
    Task,
    Trainer,
    UseCase,
)
from aistack.training.metrics import (
    accuracy,
    average_precision,
    macro_f1,
    mae,
    multiclass_log_loss,
    r2,
    rmse,
    roc_auc,
)

START = datetime(2024, 1, 1)


class Rows(BaseModel):
    """How many rows to ingest (all by default)."""

    rows: int = Field(default=10_000, ge=10, description="rows to ingest")


def _table_use_case(
    name: str,
    task: Task,
    features: list[str],
    label: str,
    data: Callable[[int], tuple[np.ndarray, np.ndarray]],
    *,
    trainers: tuple[Trainer, ...],
    metrics: dict,
    gates: Gates,
    split: Split,
    label_dtype: type = pl.Int64,
    clock: bool = True,
) -> UseCase:
    """A use case over one table of rows: id, (time,) features, label."""
    times = {"observed_at": pl.Datetime} if clock else {}

    def batches(params: Rows, seed: int) -> Iterator[Batch]:
        x, y = data(seed)
        n = min(len(y), params.rows)
        table = pa.table(
            {
                "row_id": np.arange(n),
                **(
                    {"observed_at": [START + timedelta(minutes=i) for i in range(n)]}
                    if clock
                    else {}
                ),
                **{f: x[:n, j] for j, f in enumerate(features)},
                label: y[:n],
            }
        )
        for k, start in enumerate(range(0, n, 100)):
            yield Batch("rows", f"part-{k:03d}", table.slice(start, 100))

    contract = type(
        f"{name.title()}Row",
        (pa_pl.DataFrameModel,),
        {
            "__annotations__": {
                "row_id": pl.Int64,
                **times,
                **dict.fromkeys(features, pl.Float64),
                label: label_dtype,
            },
            "row_id": pa_pl.Field(ge=0),
            **{f: pa_pl.Field(nullable=False) for f in features},
        },
    )
    request = create_model(  # type: ignore[call-overload]
        f"{name.title()}Request",
        row_id=(int | None, None),
        **({"observed_at": (datetime, ...)} if clock else {}),
        **{f: (float, Field(allow_inf_nan=False)) for f in features},
    )
    return UseCase(
        name=name,
        description=f"test-only {task}: {name}",
        task=task,
        params=Rows,
        read_sources=batches,
        silver=(SilverTable("rows", "rows", lambda f: f, contract, key=("row_id",)),),
        views=(),
        row_features=tuple(features),
        labels=Labels(
            table="silver.rows",
            id="row_id",
            timestamp="observed_at" if clock else None,
            label=label,
            columns=tuple(features),
        ),
        split=split,
        trainers=trainers,
        metrics=metrics,
        gates=gates,
        serving=Serving(request=request, threshold=0.6),
    )


WINE_FEATURES = ["alcohol", "malic_acid", "flavanoids", "color_intensity", "proline"]


def _wine(seed: int) -> tuple[np.ndarray, np.ndarray]:
    data = load_wine()
    order = np.random.default_rng(seed).permutation(len(data.target))
    idx = [data.feature_names.index(f) for f in WINE_FEATURES]
    return data.data[order][:, idx], data.target[order]


wine = _table_use_case(
    "wine",
    "multiclass",
    WINE_FEATURES,
    "cultivar",
    _wine,
    trainers=(
        Trainer(
            "logistic",
            lambda seed: make_pipeline(StandardScaler(), LogisticRegression()),
        ),
        Trainer(
            "forest",
            lambda seed: RandomForestClassifier(n_estimators=50, random_state=seed),
        ),
    ),
    metrics={
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "log_loss": multiclass_log_loss,
    },
    gates=Gates(primary_metric="log_loss", metric_floors={"accuracy": 0.8}),
    split=Split(kind="stratified", fractions=(0.7, 0.3)),
)

DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s5"]


def _diabetes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    data = load_diabetes()
    idx = [data.feature_names.index(f) for f in DIABETES_FEATURES]
    return data.data[:, idx], data.target.astype(np.float64)


diabetes = _table_use_case(
    "diabetes",
    "regression",
    DIABETES_FEATURES,
    "progression",
    _diabetes,
    trainers=(
        Trainer("ridge", lambda seed: Ridge(alpha=0.1), interval=0.9),
        Trainer("mean", lambda seed: Ridge(alpha=1e9)),  # ~ the mean: worse
    ),
    metrics={"rmse": rmse, "mae": mae, "r2": r2},
    gates=Gates(
        primary_metric="rmse",
        metric_floors={"rmse": 65.0},
        monotonic={"bmi": "increasing"},
    ),
    split=Split(kind="random", fractions=(0.6, 0.2, 0.2), seed=3),
    label_dtype=pl.Float64,
)

SENSOR_FEATURES = ["temperature", "vibration", "pressure"]


def _sensors(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 2000
    normal = rng.normal([60.0, 0.2, 101.0], [2.0, 0.05, 0.5], size=(n, 3))
    anomalous = rng.random(n) < 0.04
    normal[anomalous] += rng.normal(
        [12.0, 0.4, 3.0], [3.0, 0.1, 1.0], (anomalous.sum(), 3)
    )
    return normal, anomalous.astype(np.int64)


sensors = _table_use_case(
    "sensors",
    "anomaly",
    SENSOR_FEATURES,
    "failed",
    _sensors,
    trainers=(
        Trainer(
            "isolation_forest",
            lambda seed: IsolationForest(n_estimators=100, random_state=seed),
            supervised=False,
        ),
    ),
    metrics={"roc_auc": roc_auc, "average_precision": average_precision},
    gates=Gates(primary_metric="average_precision", metric_floors={"roc_auc": 0.8}),
    split=Split(kind="random", fractions=(0.6, 0.4)),
    clock=False,
)
