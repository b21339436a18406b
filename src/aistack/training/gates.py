"""Promotion gates: what a challenger must pass before it becomes champion.

Each gate returns a `GateResult` with a one-line reason; all are evaluated (no
short-circuit) so the run records every failure, not only the first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from aistack.contract import Gates
from aistack.contract.model import Task
from aistack.training.models import Scorer

SAMPLE_ROWS = 1000
LATENCY_CALLS = 30
GRID_QUANTILES = np.linspace(0.5, 0.99, 10)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict and why."""

    name: str
    passed: bool
    detail: str


def _metric_floors(
    metrics: Mapping[str, float], gates: Gates, directions: Mapping[str, bool]
) -> list[GateResult]:
    results = []
    for name, floor in gates.metric_floors.items():
        value = metrics.get(name, float("nan"))
        up = directions.get(name, True)
        ok = not math.isnan(value) and (value >= floor if up else value <= floor)
        bound = "floor" if up else "ceiling"
        results.append(
            GateResult(f"floor_{name}", ok, f"{name}={value:.4f}, {bound} {floor}")
        )
    return results


def _output(
    model: Scorer, sample: pd.DataFrame, gates: Gates, task: Task
) -> list[GateResult]:
    try:
        scores = np.asarray(model.predict(sample))
    except Exception as exc:
        return [GateResult("output_shape", False, f"predict raised {exc!r}")]
    shape_ok = scores.shape == (len(sample),)
    finite = bool(np.isfinite(scores).all()) if shape_ok else False
    varies = bool(finite and np.ptp(scores) > 0)
    bounds = gates.score_range or ((0.0, 1.0) if task == "binary" else None)
    detail = (
        f"shape {scores.shape} for {len(sample)} rows, finite={finite}, varies={varies}"
    )
    shape = GateResult("output_shape", shape_ok and finite and varies, detail)
    if bounds is None:  # scores are not probabilities: no range to hold
        return [shape]
    lo, hi = bounds
    in_range = bool(finite and scores.min() >= lo and scores.max() <= hi)
    return [
        shape,
        GateResult(
            "score_range",
            in_range,
            f"scores in [{scores.min():.4g}, {scores.max():.4g}], allowed [{lo}, {hi}]"
            if finite
            else "scores are not finite",
        ),
    ]


def _invariance(
    model: Scorer, sample: pd.DataFrame, gates: Gates, seed: int
) -> list[GateResult]:
    results = []
    rng = np.random.default_rng(seed)
    base = np.asarray(model.predict(sample))
    for column in gates.irrelevant_columns:
        shuffled = sample.copy()
        shuffled[column] = rng.permutation(shuffled[column].to_numpy())
        diff = float(np.max(np.abs(np.asarray(model.predict(shuffled)) - base)))
        results.append(
            GateResult(
                f"invariant_{column}",
                diff <= 1e-9,  # noqa: PLR2004
                f"max score change {diff:.3g} when {column} is shuffled",
            )
        )
    return results


def _monotonic(model: Scorer, sample: pd.DataFrame, gates: Gates) -> list[GateResult]:
    results = []
    for column, direction in gates.monotonic.items():
        grid = np.unique(
            np.nanquantile(sample[column].to_numpy(dtype=float), GRID_QUANTILES)
        )
        means = []
        for value in grid:
            probe = sample.copy()
            probe[column] = value
            means.append(float(np.mean(model.predict(probe))))
        steps = np.diff(means) if len(means) > 1 else np.zeros(1)
        worst = float(steps.min() if direction == "increasing" else -steps.max())
        ok = worst >= -gates.monotonic_tolerance
        results.append(
            GateResult(
                f"monotonic_{column}",
                ok,
                f"mean score {direction} along {column} q50..q99: "
                f"worst step {worst:+.4f} (tolerance {gates.monotonic_tolerance})",
            )
        )
    return results


def _latency(model: Scorer, sample: pd.DataFrame, gates: Gates) -> GateResult:
    row = sample.iloc[:1]
    model.predict(row)
    timings = []
    for _ in range(LATENCY_CALLS):
        start = time.perf_counter()
        model.predict(row)
        timings.append((time.perf_counter() - start) * 1000)
    median = float(np.median(timings))
    return GateResult(
        "latency",
        median <= gates.max_latency_ms,
        f"single-row predict median {median:.2f} ms, ceiling {gates.max_latency_ms} ms",
    )


def _versus_champion(
    metrics: Mapping[str, float],
    gates: Gates,
    champion: float | None,
    directions: Mapping[str, bool],
) -> GateResult:
    name = gates.primary_metric
    value = metrics.get(name, float("nan"))
    if champion is None:
        return GateResult("not_worse_than_champion", True, "no champion yet")
    up = directions.get(name, True)
    gained = value - champion if up else champion - value
    ok = not math.isnan(value) and gained >= -gates.champion_tolerance
    return GateResult(
        "not_worse_than_champion",
        ok,
        f"{name}={value:.4f} vs champion {champion:.4f} on the same holdout",
    )


def check_gates(
    model: Scorer,
    holdout: pd.DataFrame,
    metrics: Mapping[str, float],
    gates: Gates,
    *,
    champion_metric: float | None,
    seed: int,
    directions: Mapping[str, bool] | None = None,
    task: Task = "binary",
) -> list[GateResult]:
    """Every gate's verdict for `model` on `holdout` (model-input columns).

    `directions` maps a metric to greater-is-better (default: True); `task`
    decides whether scores must lie in [0, 1] (binary) when no range is declared.
    """
    directions = directions or {}
    sample = holdout.sample(min(SAMPLE_ROWS, len(holdout)), random_state=seed)
    output = _output(model, sample, gates, task)
    results = _metric_floors(metrics, gates, directions) + output
    if output[0].passed:  # output usable: behaviour checks can run
        results += _invariance(model, sample, gates, seed)
        results += _monotonic(model, sample, gates)
        results.append(_latency(model, sample, gates))
    else:
        results.append(GateResult("behaviour", False, "skipped: output unusable"))
    results.append(_versus_champion(metrics, gates, champion_metric, directions))
    return results
