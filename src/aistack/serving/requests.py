"""Score requests online: features -> model -> decision, then the state update.

Aggregation views are computed per request from the online aggregation state
plus the request itself (the same definition as training, see
`aistack.features.realtime`); after scoring, each event joins the state.
Request-time features use the same polars expressions as the training set.
SQL views are batch-only: served as of their last materialization (their age is
reported), with the declared defaults where the entity is unknown, expired, or
materialized after the request's time (never a value from its future).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from aistack.contract import AggregationView, FeatureView, UseCase
from aistack.errors import ConfigError
from aistack.features.online import OnlineStore, to_us
from aistack.features.realtime import ViewFeatures, commit, label_index, online_features
from aistack.features.request_time import request_plan
from aistack.features.state import EventState
from aistack.serving.inference import Predictor
from aistack.training.explain import explanations

_PLAN_ROWS = 64  # up to this many rows, request-time features skip polars


@dataclass
class Scored:
    """One scored request, as answered and as logged.

    `score` is read as the task says (binary: P(positive); anomaly: anomaly
    score; regression: the value; multiclass: the class, with `probabilities`);
    `decision` is the score at or above the threshold (binary, anomaly; False
    for the other tasks). `features` are the values served (None: unknown,
    filled with the declared default for the model); `late` names the views
    whose values exclude events after this one (see the module docstring);
    `explanation` is set only when asked (see
    `aistack.training.explain.explanations`).
    """

    request_id: str
    score: float
    decision: bool
    model_name: str
    model_version: int
    feature_age_seconds: dict[str, float | None]
    unknown_entities: list[str]
    features: dict[str, float | None]
    arm: str = "champion"
    event_id: str | None = None
    event_time: datetime | None = None
    late: list[str] = field(default_factory=list)
    probabilities: dict[str, float] | None = None
    explanation: dict[str, Any] | None = None
    interval: tuple[float, float] | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    """The task's own answer fields (`answer_fields`), as every output carries them."""


@dataclass
class LookupTimings:
    """Where a scoring call spent its time (seconds)."""

    lookup: float = 0.0
    total: float = 0.0
    matrix: np.ndarray | None = None


@dataclass
class RequestFeatures:
    """Features of a batch of payloads, before any model sees them."""

    request_ids: list[str]
    event_ids: list[Any]
    times: list[datetime | None]
    values: dict[str, np.ndarray]
    ages: list[dict[str, float | None]]
    unknown: list[list[str]]
    late: list[list[str]]
    pending: list[tuple[AggregationView, ViewFeatures]]
    lookup_seconds: float = 0.0


def request_columns(use_case: UseCase) -> list[str]:
    """Payload columns the features read: timestamp (if any) and label columns."""
    labels = use_case.labels
    clock = [labels.timestamp] if labels.timestamp else []
    return list(dict.fromkeys([*clock, *labels.columns]))


def request_features(
    use_case: UseCase,
    store: OnlineStore,
    events: EventState | None,
    payloads: Sequence[Mapping[str, Any]],
) -> RequestFeatures:
    """Every feature of every payload (validated request dicts), vectorised."""
    labels = use_case.labels
    n = len(payloads)
    ids = [p.get(labels.id) for p in payloads]
    call = uuid.uuid4().hex  # one per call; rows without an id get call-index
    request_ids = [
        str(i) if i is not None else f"{call}-{k}" for k, i in enumerate(ids)
    ]
    columns: dict[str, Any] = {
        c: [p[c] for p in payloads] for c in request_columns(use_case)
    }
    values = _request_time(use_case, payloads, columns)
    numeric = all(i is None or isinstance(i, int | float) for i in ids)
    values[labels.id] = (  # never a feature: ids of text (pseudonyms) stay text
        np.array([i if i is not None else 0 for i in ids], dtype=np.float64)
        if numeric
        else np.array(["" if i is None else str(i) for i in ids], dtype=object)
    )
    # rows without a clock have no event time (monitoring uses logged_at)
    times = list(columns[labels.timestamp]) if labels.timestamp else [None] * n
    ts_us = [to_us(t) for t in times if t is not None]  # views need a clock
    out = RequestFeatures(
        request_ids,
        [i if i is not None else r for i, r in zip(ids, request_ids, strict=True)],
        times,
        values,
        [{} for _ in range(n)],
        [[] for _ in range(n)],
        [[] for _ in range(n)],
        [],
    )
    lookup_start = time.perf_counter()
    for view in use_case.views:
        if isinstance(view, AggregationView):
            if events is None:
                msg = f"view {view.name} aggregates events: an event state is needed"
                raise ConfigError(msg)
            found = online_features(
                view,
                events,
                entities=columns[view.entity],
                ts_us=ts_us,
                ids=out.event_ids,
                anonymous=[i is None for i in ids],
                columns=columns,
                label_at=label_index(view, use_case),
            )
            out.pending.append((view, found))
            for j, name in enumerate(found.names):
                values[name] = found.values[:, j]
            for k in range(n):
                out.ages[k][view.name] = 0.0
                if found.late[k]:
                    out.late[k].append(view.name)
        else:
            _batch_view(view, store, columns[view.entity], ts_us, out)
    out.lookup_seconds = time.perf_counter() - lookup_start
    return out


def _request_time(
    use_case: UseCase, payloads: Sequence[Mapping[str, Any]], columns: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Request-time features: compiled Python for a few rows, else polars (the
    training path's evaluation; the compiled plan gives up where it could differ)."""
    if len(payloads) <= _PLAN_ROWS:
        found = request_plan(use_case.request_expressions).evaluate(payloads)
        if found is not None:
            return {k: np.array(v, dtype=np.float64) for k, v in found.items()}
    frame = pl.DataFrame(columns).with_columns(
        expr.alias(name) for name, expr in use_case.request_expressions.items()
    )
    return {
        name: frame.get_column(name).to_numpy().astype(np.float64)
        for name in use_case.request_expressions
    }


def _batch_view(
    view: FeatureView,
    store: OnlineStore,
    entities: Sequence[object],
    ts_us: Sequence[int],
    out: RequestFeatures,
) -> None:
    ttl_us = view.ttl.total_seconds() * 1e6
    rows = store.get(view.name, entities)
    block = np.full((len(ts_us), len(view.features)), np.nan)
    for i, row in enumerate(rows):
        age_us = None if row is None else ts_us[i] - row.event_time_us
        out.ages[i][view.name] = None if age_us is None else age_us / 1e6
        if row is None or age_us is None or age_us > ttl_us:
            out.unknown[i].append(view.name)
            continue
        if age_us < 0:  # materialized after the request: its future
            out.late[i].append(view.name)
            continue
        block[i] = [np.nan if v is None else v for v in row.values]
    for j, name in enumerate(view.feature_names):
        out.values[name] = block[:, j]


def commit_features(
    use_case: UseCase, events: EventState | None, found: RequestFeatures
) -> None:
    """Add the scored events to the aggregation state (idempotent per event id)."""
    if events is None:
        return
    commit(
        events,
        [
            (view, features, label_index(view, use_case) is not None)
            for view, features in found.pending
        ],
    )


def predict(
    use_case: UseCase,
    predictor: Predictor,
    found: RequestFeatures,
    rows: Sequence[int] | None = None,
    *,
    timings: LookupTimings | None = None,
    explain: bool = False,
) -> list[Scored]:
    """Score `rows` (default: all) of `found` with `predictor` (and explain each
    score when `explain`; SchemaError for a model without explanations)."""
    picked = list(range(len(found.request_ids))) if rows is None else list(rows)
    features = predictor.features
    if picked:
        matrix = np.column_stack([found.values[f] for f in features]).astype(
            np.float64, copy=False
        )
        if rows is not None:
            matrix = matrix[picked]
        fill = _fill(use_case, features)
        if fill is not None:  # unknown values take their declared defaults
            matrix = np.where(np.isnan(matrix), fill, matrix)
    else:
        matrix = np.empty((0, len(features)))
    scores = predictor.score(matrix) if picked else np.empty(0)
    threshold = use_case.serving.threshold if use_case.serving else 0.5
    decides = use_case.task in ("binary", "anomaly")
    proba = predictor.probabilities(matrix) if picked else None
    bounds = predictor.intervals(matrix) if picked else None
    explained = (
        explanations(predictor.model, matrix)
        if explain and picked
        else [None] * len(picked)
    )
    names = use_case.feature_names
    if timings is not None:
        timings.matrix = matrix
        timings.lookup = found.lookup_seconds
    # one list per row, not one numpy scalar per (row, feature)
    served_rows = (
        np.column_stack([found.values[f] for f in names])
        .astype(np.float64, copy=False)[np.asarray(picked, dtype=np.int64)]
        .tolist()
        if picked
        else []
    )
    score_list = np.asarray(scores, dtype=np.float64).tolist()
    out = []
    for k, i in enumerate(picked):
        served = {
            f: None if v != v else v  # noqa: PLR0124  (NaN: unknown)
            for f, v in zip(names, served_rows[k], strict=True)
        }
        score = score_list[k]
        out.append(
            Scored(
                found.request_ids[i],
                score,
                decides and score >= threshold,
                predictor.name,
                predictor.version,
                found.ages[i],
                found.unknown[i],
                served,
                event_id=str(found.event_ids[i]),
                event_time=found.times[i],
                late=found.late[i],
                probabilities=_class_probabilities(proba, k),
                explanation=explained[k],
                interval=None if bounds is None else (bounds[k, 0], bounds[k, 1]),
            )
        )
        out[-1].answer = answer_fields(use_case.task, out[-1])
    return out


def _fill(use_case: UseCase, features: Sequence[str]) -> np.ndarray | None:
    """Each feature's declared default (NaN: none) in model order; None if none."""
    defaults = use_case.feature_defaults
    if not any(f in defaults for f in features):
        return None
    return np.array([defaults.get(f, np.nan) for f in features], dtype=np.float64)


def answer_fields(task: str, s: Scored) -> dict[str, Any]:
    """The task's answer fields: binary score + decision, multiclass class +
    probabilities, regression value + interval ([low, high], None when the model
    gives none), anomaly score + flag (as serialised: `class`)."""
    if task == "regression":
        interval = None if s.interval is None else [float(v) for v in s.interval]
        return {"value": s.score, "interval": interval}
    if task == "multiclass":
        return {"class": f"{s.score:g}", "probabilities": s.probabilities or {}}
    if task == "anomaly":
        return {"score": s.score, "anomaly": s.decision}
    return {"score": s.score, "decision": s.decision}


def _class_probabilities(
    proba: tuple[list[float], np.ndarray] | None, row: int
) -> dict[str, float] | None:
    if proba is None:
        return None
    classes, matrix = proba
    return {f"{c:g}": float(p) for c, p in zip(classes, matrix[row], strict=True)}


def score_requests(
    use_case: UseCase,
    store: OnlineStore,
    predictor: Predictor,
    payloads: Sequence[Mapping[str, Any]],
    *,
    events: EventState | None = None,
    timings: LookupTimings | None = None,
    update_state: bool = True,
) -> list[Scored]:
    """Features, scores, then the state update (skip it for a shadow model)."""
    start = time.perf_counter()
    found = request_features(use_case, store, events, payloads)
    scored = predict(use_case, predictor, found, timings=timings)
    if update_state:
        commit_features(use_case, events, found)
    if timings is not None:
        timings.total = time.perf_counter() - start
    return scored
