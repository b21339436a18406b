"""The evaluation report of a training run: one self-contained HTML page.

For every model trained in the run: its test metrics and gate verdicts, the
champion chosen, ROC and precision-recall curves (binary and anomaly tasks) or
predicted against actual values (regression) on the test rows, each metric
on each day of the test period (every metric computed on that day's rows
alone), and the tuning history of each tuned trainer (every trial's objective
and parameters, the best so far, the parameters chosen). Written next to the
workspace's other reports and attached to every trained model's MLflow run.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from aistack.contract import UseCase
from aistack.contract.model import greater_is_better
from aistack.htmlpage import RC, figure, header, svg, table, write_page
from aistack.training.fit import Candidate
from aistack.training.tune import TuningHistory

POINTS = 400
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def write_evaluation_report(
    path: Path,
    use_case: UseCase,
    candidates: Sequence[Candidate],
    champion: Candidate | None,
    *,
    when: datetime,
    tuning: Mapping[str, TuningHistory] | None = None,
) -> Path:
    """Write the report of the models trained now (reused ones are listed only)
    and the last tuning history of each trainer in `tuning`."""
    scored = [c for c in candidates if c.test_scores is not None]
    with mpl.rc_context(RC):
        sections = [
            header(
                f"{use_case.name}: models trained {when:%Y-%m-%d %H:%M}",
                {
                    "task": use_case.task,
                    "champion": "none passed every gate"
                    if champion is None
                    else f"{champion.trainer} (version {champion.version})",
                    "primary metric": use_case.gates.primary_metric,
                    "split": use_case.split.kind,
                    "test rows": str(len(scored[0].test_scores))  # type: ignore[arg-type]
                    if scored
                    else "—",
                },
            ),
            _models_section(use_case, candidates, champion),
            _gates_section(candidates),
            _curves_section(use_case, scored),
            _daily_section(use_case, scored),
            _tuning_section(use_case, tuning or {}),
        ]
    return write_page(path, f"{use_case.name} evaluation", sections)


def _models_section(
    use_case: UseCase, candidates: Sequence[Candidate], champion: Candidate | None
) -> str:
    metrics = list(use_case.metrics)
    rows = [
        [
            c.trainer,
            c.version,
            *(c.metrics.get(m, float("nan")) for m in metrics),
            "reused" if c.reused else "trained",
            "all passed" if c.passed else "FAILED",
            "champion"
            if champion is not None and c.version == champion.version
            else "",
        ]
        for c in candidates
    ]
    classes = ["" if c.passed else "drifted" for c in candidates]
    headers = ["model", "version", *metrics, "this run", "gates", ""]
    return (
        "<section><h2>Models (test period)</h2>"
        + table(headers, rows, classes)
        + "</section>"
    )


def _gates_section(candidates: Sequence[Candidate]) -> str:
    rows = [
        [c.trainer, g.name, "pass" if g.passed else "FAIL", g.detail]
        for c in candidates
        for g in c.gates
    ]
    classes = ["" if r[2] == "pass" else "drifted" for r in rows]
    return (
        "<section><h2>Gates</h2>"
        + table(["model", "gate", "verdict", "detail"], rows, classes)
        + "</section>"
    )


def _curves_section(use_case: UseCase, scored: Sequence[Candidate]) -> str:
    if not scored:
        return ""
    figures = []
    if use_case.task in ("binary", "anomaly"):
        roc, pr = Figure(figsize=(5, 4)), Figure(figsize=(5, 4))
        ax_roc, ax_pr = roc.subplots(), pr.subplots()
        for i, c in enumerate(scored):
            frame = c.test_scores
            assert frame is not None
            labels, scores = frame["label"].to_numpy(), frame["score"].to_numpy()
            if len(np.unique(labels)) < 2:  # noqa: PLR2004
                continue
            color = COLORS[i % len(COLORS)]
            fpr, tpr, _ = roc_curve(labels, scores)
            keep = _thin(len(fpr))  # at most POINTS per curve: the page stays small
            ax_roc.plot(fpr[keep], tpr[keep], color=color, label=c.trainer)
            precision, recall, _ = precision_recall_curve(labels, scores)
            keep = _thin(len(recall))
            ax_pr.plot(recall[keep], precision[keep], color=color, label=c.trainer)
        ax_roc.plot([0, 1], [0, 1], color="#999", linestyle=":")
        ax_roc.set(xlabel="false positive rate", ylabel="true positive rate")
        ax_pr.set(xlabel="recall", ylabel="precision")
        for ax in (ax_roc, ax_pr):
            ax.legend(loc="best", fontsize=8)
        figures += [figure(svg(roc), "ROC curve"), figure(svg(pr), "Precision-recall")]
    elif use_case.task == "regression":
        for i, c in enumerate(scored):
            frame = c.test_scores
            assert frame is not None
            fig = Figure(figsize=(5, 4))
            ax = fig.subplots()
            ax.scatter(frame["label"], frame["score"], s=6, color=COLORS[i % 6])
            low = float(min(frame["label"].min(), frame["score"].min()))
            high = float(max(frame["label"].max(), frame["score"].max()))
            ax.plot([low, high], [low, high], color="#999", linestyle=":")
            ax.set(xlabel="actual", ylabel="predicted")
            figures.append(figure(svg(fig), f"{c.trainer}: predicted vs actual"))
    if not figures:
        return ""
    return (
        '<section><h2>Test-period curves</h2><div class="grid">'
        + "".join(figures)
        + "</div></section>"
    )


def _daily_section(use_case: UseCase, scored: Sequence[Candidate]) -> str:
    if not scored or not use_case.split.by_days:
        return ""
    ts = use_case.labels.timestamp
    figures = []
    for name, metric in use_case.metrics.items():
        fig = Figure(figsize=(5, 3))
        ax = fig.subplots()
        for i, c in enumerate(scored):
            frame = c.test_scores
            assert frame is not None
            days = pd.to_datetime(frame[ts]).dt.floor("D")
            values = pd.Series(
                {day: safe_metric(metric, part) for day, part in frame.groupby(days)}
            )
            ax.plot(
                values.index,
                values.to_numpy(),
                marker="o",
                color=COLORS[i % 6],
                label=c.trainer,
            )
        ax.set(ylabel=name)
        ax.legend(loc="best", fontsize=8)
        figures.append(figure(svg(fig), f"{name} per day"))
    note = '<p class="note">Each metric computed on each day\'s test rows alone.</p>'
    return (
        "<section><h2>Metrics per day</h2>"
        + note
        + '<div class="grid">'
        + "".join(figures)
        + "</div></section>"
    )


def _tuning_section(use_case: UseCase, tuning: Mapping[str, TuningHistory]) -> str:
    """Per tuned trainer: objective per trial with the best so far, the trials
    table and the parameters chosen."""
    parts = []
    for trainer, history in tuning.items():
        up = greater_is_better(use_case.metrics[history.metric])
        done = [t for t in history.trials if t["value"] is not None]
        fig = Figure(figsize=(5, 3))
        ax = fig.subplots()
        numbers = [t["number"] for t in done]
        values = np.array([t["value"] for t in done], dtype=float)
        best = np.maximum.accumulate(values) if up else np.minimum.accumulate(values)
        ax.plot(numbers, values, "o", color=COLORS[0], label="trial")
        ax.step(numbers, best, where="post", color=COLORS[1], label="best so far")
        ax.set(xlabel="trial", ylabel=f"validation {history.metric}")
        ax.legend(loc="best", fontsize=8)
        rows = [
            [
                t["number"],
                t["state"],
                float("nan") if t["value"] is None else t["value"],
                ", ".join(f"{k}={_short(v)}" for k, v in t["params"].items()),
            ]
            for t in history.trials
        ]
        chosen = ", ".join(f"{k}={_short(v)}" for k, v in history.best_params.items())
        note = (
            f"tuning run {history.run_id}; chosen: {chosen}; objective: validation "
            f"{history.metric} ({'higher' if up else 'lower'} is better)"
        )
        parts.append(
            f"<h3>{html.escape(trainer)}</h3>"
            f'<p class="note">{html.escape(note)}</p>'
            + figure(svg(fig), f"{trainer}: {history.metric} per trial")
            + table(["trial", "state", history.metric, "parameters"], rows)
        )
    if not parts:
        return ""
    return "<section><h2>Tuning history</h2>" + "".join(parts) + "</section>"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _thin(n: int) -> np.ndarray:
    """Indices of at most POINTS evenly spaced points of a curve, ends kept."""
    return np.unique(np.linspace(0, n - 1, min(n, POINTS)).astype(np.int64))


def safe_metric(metric: object, frame: pd.DataFrame) -> float:
    """The metric on `frame`, NaN where it is undefined (e.g. one class)."""
    try:
        return float(metric(frame))  # type: ignore[operator]
    except (ValueError, ZeroDivisionError):
        return float("nan")
