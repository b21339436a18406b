"""Batch scoring: the champion scores a date range into the predictions table.

Each prediction row carries the row id, its entity keys and timestamp, the score,
the model name and version, and the input table versions (JSON); with
`explain`, also each score's explanation (JSON, see
`aistack.training.explain.explanations`). Scoring the same
range with the same model on the same inputs again writes nothing; on new inputs
it replaces that range's predictions of that model version (history in the log).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from aistack.contract import RankingUseCase, UseCase
from aistack.engine import Engine
from aistack.errors import RegistryError
from aistack.features.gold import point_in_time_join
from aistack.lake.delta import Lake
from aistack.registry.aliases import Registry
from aistack.registry.artifacts import load_model
from aistack.sql import quote
from aistack.training.explain import check_explainable, explanations
from aistack.training.recommend import recommendations_frame
from aistack.training.sets import label_spine, with_request_features
from aistack.training.tracking import tracking


@dataclass(frozen=True)
class ScoreResult:
    """What one batch scoring did."""

    table: str
    rows: int
    model_version: int
    version: int | None
    skipped: bool


def score_range(
    lake: Lake,
    use_case: UseCase,
    registry: Registry,
    *,
    start: datetime,
    end: datetime,
    explain: bool = False,
    engine: Engine | None = None,
) -> ScoreResult:
    """Score rows with start <= timestamp < end (rows without a clock: all of
    them) with the current champion (and write each score's explanation, JSON,
    when `explain`); `scored_at` records when.

    On a cluster engine the point-in-time join runs on the workers, and so does
    scoring: each worker loads the model (its artifact SHA-256 checked, as here)
    and scores one contiguous part of the joined rows.
    """
    version = registry.version_of(use_case.name, "champion")
    if version is None:
        raise RegistryError(f"model {use_case.name!r} has no champion to score with")
    labels = use_case.labels
    table = use_case.predictions_table
    lineage = lake.versions(
        [labels.table, *(use_case.gold_table(v) for v in use_case.views)]
    )
    inputs: dict[str, int | str] = {
        **lineage,
        "model": f"{use_case.name}/{version}",
        "range": f"{start.isoformat()}/{end.isoformat()}",
        **({"explain": "true"} if explain else {}),
    }
    if lake.last_inputs(table) == inputs:
        return ScoreResult(table, 0, version, lake.version(table), skipped=True)
    spine = label_spine(lake, use_case, start, end, version=lineage[labels.table])
    joined = point_in_time_join(
        lake,
        use_case,
        spine,
        as_of=datetime.now(UTC),
        versions=lineage,
        engine=engine,
    )
    frame = with_request_features(joined, use_case)
    on_workers = engine is not None and engine.distributed and not explain
    model = None if on_workers else load_model(registry, use_case.name, version)
    if explain:  # checked before any scoring: SchemaError for no explanations
        assert model is not None  # explained runs score here
        check_explainable(model)
    inputs_frame = frame[use_case.model_inputs]
    if not len(frame):
        scores: npt.NDArray[np.float64] | list[float] = []
    elif model is not None:
        scores = model.predict(inputs_frame)
    else:
        assert engine is not None  # on_workers
        task = partial(
            _score_part, lake=lake, tracking_uri=registry.uri, name=use_case.name
        )
        parts = np.array_split(np.arange(len(frame)), engine.partitions)
        chunks = [(version, inputs_frame.iloc[rows]) for rows in parts if len(rows)]
        scores = np.concatenate(engine.map(task, chunks))
    keys = dict.fromkeys([*labels.order, *(v.entity for v in use_case.views)])
    n = len(frame)
    explained = {}
    if explain:
        assert model is not None  # explained runs score here
        rows = explanations(model, model.input_matrix(frame)) if n else []
        texts = [json.dumps(e) for e in rows]
        explained["explanation"] = pa.array(texts, pa.string())
    out = pa.table(
        {
            **{k: pa.array(frame[k].to_numpy()) for k in keys},
            "score": pa.array(scores, pa.float64()),
            "model_name": pa.array([use_case.name] * n, pa.string()),
            "model_version": pa.array([version] * n, pa.int64()),
            "input_versions": pa.array([json.dumps(lineage)] * n, pa.string()),
            "scored_at": pa.array(
                [datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")
            ),
            **explained,
        }
    )
    # the period's earlier predictions of this version are replaced, not
    # duplicated (they stay in the Delta log's earlier versions)
    period = f"model_version = {int(version)}"  # rows without a clock: all
    if labels.timestamp is not None:
        ts = quote(labels.timestamp)
        period += f" AND {ts} >= '{start.isoformat()}' AND {ts} < '{end.isoformat()}'"
    written = lake.write(  # merge: explained and plain runs share the table
        table, out, mode="overwrite", predicate=period, inputs=inputs, merge_schema=True
    )
    return ScoreResult(table, n, version, written, skipped=False)


def _score_part(
    part: tuple[int, pd.DataFrame], *, lake: Lake, tracking_uri: str, name: str
) -> npt.NDArray[np.float64]:
    """One cluster task: model `name` version `part[0]`, loaded in this worker
    after its artifact digest is checked, scores the rows of `part[1]`."""
    version, rows = part
    with tracking(tracking_uri):
        model = load_model(Registry(lake, tracking_uri), name, version)
    return np.asarray(model.predict(rows), dtype=np.float64)


def score_recommendations(
    lake: Lake, use_case: RankingUseCase, registry: Registry
) -> ScoreResult:
    """The champion's top-K for every known user into the recommendations table.

    One overwrite per (model version, input versions): re-running writes nothing.
    """
    version = registry.version_of(use_case.name, "champion")
    if version is None:
        raise RegistryError(f"model {use_case.name!r} has no champion to score with")
    table = use_case.recommendations_table
    items = use_case.items_table
    tables = [use_case.interactions_table, *([items] if items else [])]
    inputs: dict[str, int | str] = {
        **lake.versions(tables),
        "model": f"{use_case.name}/{version}",
        "k": str(use_case.k),
    }
    if lake.last_inputs(table) == inputs:
        return ScoreResult(table, 0, version, lake.version(table), skipped=True)
    model = load_model(registry, use_case.name, version)
    frame = recommendations_frame(
        model, use_case.k, user=use_case.user, item=use_case.item
    )
    out = pa.Table.from_pandas(frame, preserve_index=False).append_column(
        "model_version", pa.array([version] * len(frame), pa.int64())
    )
    written = lake.write(table, out, mode="overwrite", inputs=inputs)
    return ScoreResult(table, len(frame), version, written, skipped=False)
