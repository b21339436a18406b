"""A monitoring report for people: one self-contained HTML file with inline SVG plots.

The file opens offline (no external CSS, JS, fonts or images), so it can be mailed,
archived next to a run or attached to a ticket. Figures are built on
`matplotlib.figure.Figure` directly (no pyplot, no global figure state) and
rendered with the SVG backend; text stays text (`svg.fonttype = none`) to keep
the file small, and everything user-provided is escaped with `html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from aistack.htmlpage import RC as _RC
from aistack.htmlpage import figure as _figure
from aistack.htmlpage import header as _header
from aistack.htmlpage import svg as _svg
from aistack.htmlpage import table as _table
from aistack.htmlpage import write_page

REFERENCE_COLOR = "#1f77b4"
CURRENT_COLOR = "#d62728"
BAND_COLOR = "#9ecae1"
METRIC_COLORS = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MAX_CATEGORIES = 12
HIST_BINS = 30


def render_report(
    path: Path,
    *,
    title: str,
    summary: Mapping[str, str],
    drift: pd.DataFrame,
    overlays: Mapping[str, tuple[np.ndarray, np.ndarray]],
    scores_by_day: pd.DataFrame,
    performance: pd.DataFrame,
    training_metrics: Mapping[str, float],
    alerts: Sequence[Mapping[str, str]] = (),
    consistency: pd.DataFrame | None = None,
) -> Path:
    """Write the monitoring report as one self-contained HTML file at `path`.

    One offline file is what people can open, archive and attach without a server.
    """
    with mpl.rc_context(_RC):
        sections = [
            _header(title, summary),
            _drift_section(drift),
            _overlays_section(overlays),
            _scores_section(scores_by_day),
            _performance_section(performance, training_metrics),
            _consistency_section(consistency),
            alerts_section(alerts),
        ]
    return write_page(path, title, sections)


def _drift_section(drift: pd.DataFrame) -> str:
    """Drift table with drifted rows highlighted and the drifted share above it.

    The share is the headline; the table says which test decided each column.
    """
    columns = ["column", "kind", "test", "statistic", "threshold", "drifted", "psi"]
    head = "<section><h2>Data drift</h2>"
    if drift.empty:
        return head + '<p class="note">No drift results.</p></section>'
    flags = [bool(x) for x in drift["drifted"]]
    n_drifted, n = sum(flags), len(flags)
    share = (
        f'<p class="share">{n_drifted} of {n} features drifted '
        f"({n_drifted / n:.0%})</p>"
    )
    rows = [
        [_cell(r.get(c)) for c in columns]
        for r in drift.reindex(columns=columns).to_dict("records")
    ]
    classes = ["drifted" if f else "" for f in flags]
    return head + share + _table(columns, rows, classes) + "</section>"


def _cell(value: object) -> object:
    """Normalise a pandas cell (NA, numpy scalars) for `_fmt`.

    Frames carry pd.NA/NaN for missing PSI; the table shows a dash for both.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating) and math.isnan(float(value)):
        return None
    return value


def _is_categorical(*arrays: np.ndarray) -> bool:
    """Whether the samples are categorical (object, string or bool arrays).

    Categorical samples are compared by shares, numeric ones by histograms.
    """
    return any(np.asarray(a).dtype.kind in "OUSb" for a in arrays)


def _numeric_overlay(ax: Axes, reference: np.ndarray, current: np.ndarray) -> None:
    """Step histograms (density) of reference vs current on shared bins.

    Shared bins make the two shapes directly comparable.
    """
    ref = _finite(reference)
    cur = _finite(current)
    both = np.concatenate([ref, cur])
    if both.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
        return
    bins = np.histogram_bin_edges(both, bins=HIST_BINS).tolist()
    for sample, color, label in (
        (ref, REFERENCE_COLOR, "reference"),
        (cur, CURRENT_COLOR, "current"),
    ):
        if sample.size:
            ax.hist(
                sample,
                bins=bins,
                density=True,
                histtype="step",
                linewidth=1.6,
                color=color,
                label=f"{label} (n={sample.size})",
            )
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=8)


def _finite(values: np.ndarray) -> npt.NDArray[np.float64]:
    """The finite values of a numeric sample as float64.

    NaN and inf would break histogram bin edges.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def _shares(values: np.ndarray) -> pd.Series:
    """Category shares of a sample, missing values as their own category.

    Shares (not counts) compare windows of different sizes.
    """
    series = pd.Series(np.asarray(values, dtype=object).ravel(), dtype=object)
    return series.fillna("(missing)").astype(str).value_counts(normalize=True)


def _categorical_overlay(ax: Axes, reference: np.ndarray, current: np.ndarray) -> None:
    """Side-by-side bars of category shares, reference vs current.

    The most common categories are shown; the rest are pooled as "(other)".
    """
    ref, cur = _shares(reference), _shares(current)
    order = ref.add(cur, fill_value=0).sort_values(ascending=False).index.tolist()
    keep = order[:MAX_CATEGORIES]
    ref_k, cur_k = ref.reindex(keep, fill_value=0.0), cur.reindex(keep, fill_value=0.0)
    if len(order) > MAX_CATEGORIES:
        keep = [*keep, "(other)"]
        ref_k = pd.concat([ref_k, pd.Series({"(other)": 1.0 - ref_k.sum()})])
        cur_k = pd.concat([cur_k, pd.Series({"(other)": 1.0 - cur_k.sum()})])
    x = np.arange(len(keep))
    ax.bar(x - 0.2, ref_k.to_numpy(), 0.4, color=REFERENCE_COLOR, label="reference")
    ax.bar(x + 0.2, cur_k.to_numpy(), 0.4, color=CURRENT_COLOR, label="current")
    ax.set_xticks(x, [str(k) for k in keep], rotation=30, ha="right", parse_math=False)
    ax.set_ylabel("share")
    ax.legend(frameon=False, fontsize=8)


def _overlays_section(overlays: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """One small reference-vs-current plot per drifted feature.

    Seeing how a distribution moved says more than a test statistic.
    """
    if not overlays:
        return ""
    figures = []
    for name, (reference, current) in overlays.items():
        fig = Figure(figsize=(4.2, 2.8), layout="constrained")
        ax = fig.add_subplot()
        if _is_categorical(reference, current):
            _categorical_overlay(ax, reference, current)
        else:
            _numeric_overlay(ax, reference, current)
        figures.append(_figure(_svg(fig), str(name)))
    return (
        "<section><h2>Distribution overlays per drifted feature</h2>"
        f'<div class="grid">{"".join(figures)}</div></section>'
    )


def _days(frame: pd.DataFrame) -> npt.NDArray[np.datetime64]:
    """The `day` column as datetime64 values.

    Days may arrive as dates, strings or timestamps; the axis needs one type.
    """
    return pd.to_datetime(frame["day"]).to_numpy(dtype="datetime64[ns]")


def _scores_section(scores_by_day: pd.DataFrame) -> str:
    """Daily score distribution: p10-p90 band, median and mean lines.

    A shifting score distribution is the first sign of drift that matters.
    """
    head = "<section><h2>Score distribution over time</h2>"
    if scores_by_day.empty:
        return head + '<p class="note">No scored rows yet.</p></section>'
    frame = scores_by_day.sort_values("day")
    days = _days(frame)
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.fill_between(
        days,
        frame["p10"].to_numpy(float),
        frame["p90"].to_numpy(float),
        color=BAND_COLOR,
        alpha=0.6,
        label="p10 to p90",
    )
    ax.plot(days, frame["p50"].to_numpy(float), color="#08519c", ls="--", label="p50")
    ax.plot(
        days,
        frame["mean"].to_numpy(float),
        color="#111",
        marker="o",
        ms=3,
        label="mean",
    )
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper left", ncols=3)
    total = int(pd.to_numeric(frame["n"]).sum())
    note = f'<p class="note">{total:,} scored rows over {len(frame)} days.</p>'
    return head + _figure(_svg(fig), "") + note + "</section>"


def _performance_section(
    performance: pd.DataFrame, training_metrics: Mapping[str, float]
) -> str:
    """One line per metric per day, with the training-time value dashed.

    Comparing live metrics to training shows decay once labels arrive.
    """
    head = "<section><h2>Performance over time</h2>"
    metrics = [c for c in performance.columns if c != "day"]
    if performance.empty or not metrics:
        return head + '<p class="note">No labelled data yet.</p></section>'
    frame = performance.sort_values("day")
    days = _days(frame)
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for i, metric in enumerate(metrics):
        color = METRIC_COLORS[i % len(METRIC_COLORS)]
        values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(float)
        ax.plot(days, values, color=color, marker="o", ms=3, label=str(metric))
        if metric in training_metrics:
            ax.axhline(
                float(training_metrics[metric]),
                color=color,
                ls="--",
                lw=1.2,
                label=f"{metric} (training)",
            )
    for text in ax.legend(
        frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0)
    ).get_texts():
        text.set_parse_math(False)
    ax.grid(alpha=0.3)
    return head + _figure(_svg(fig), "") + "</section>"


def _consistency_section(consistency: pd.DataFrame | None) -> str:
    """Served features against their offline values, per feature.

    The one check that shows training and serving agree on real traffic.
    """
    head = "<section><h2>Online/offline consistency</h2>"
    if consistency is None or consistency.empty:
        note = "No logged prediction's event has been ingested yet."
        return head + f'<p class="note">{note}</p></section>'
    headers = ["feature", "compared", "mismatch rate", "missing rate", "max |diff|"]
    rows = consistency[
        ["feature", "compared", "mismatch_rate", "missing_rate", "max_abs_diff"]
    ].itertuples(index=False)
    classes = [
        "mismatch" if m > 0 or n > 0 else ""
        for m, n in zip(
            consistency["mismatch_rate"], consistency["missing_rate"], strict=True
        )
    ]
    note = (
        '<p class="note">Logged served values recomputed offline from silver for '
        "the events since ingested; a mismatch is a relative difference above "
        "1e-9.</p>"
    )
    return (
        head + note + _table(headers, [list(r) for r in rows], classes) + "</section>"
    )


def alerts_section(alerts: Sequence[Mapping[str, str]]) -> str:
    """The alert rows, firing ones highlighted; nothing when there are none.

    Alerts are what a reader must act on, so they get their own table.
    """
    if not alerts:
        return ""
    headers = ["rule", "state", "value", "threshold", "at"]
    rows = [[str(a.get(h, "")) for h in headers] for a in alerts]
    classes = [
        "firing" if str(a.get("state", "")).lower() == "firing" else "" for a in alerts
    ]
    return f"<section><h2>Alerts</h2>{_table(headers, rows, classes)}</section>"
