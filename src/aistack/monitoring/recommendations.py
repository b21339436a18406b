"""Monitoring served recommendations: catalogue coverage and popularity drift.

Read from the recommendation log (`RankingUseCase.log_table`, one row per
answer of the ranking API). Per day: answers, distinct users, cold-start share,
catalogue coverage (distinct items shown / items in the catalogue) and the mean
popularity of the items shown (their interaction count: the use case's gold
popularity table when it declares one, else counted in silver). Popularity
drift is the PSI of the shown items' popularity against the champion's batch
top-K (`RankingUseCase.recommendations_table`, every known user), over that
reference's quantile bins: a model or a traffic mix drifting towards
blockbusters (or away from them) moves it.

Over the whole window two signals feed the use case's alert rules (fired once
per episode, as every alert): `popularity_psi` (the same PSI over every item
shown) and `coverage_drop`, 1 - distinct items shown / distinct items of the
batch top-K of as many known users drawn at random (the mean of
`COVERAGE_DRAWS` seeded draws): serving the same few items to everyone drops
it towards 1, serving each user their own top-K keeps it near 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import matplotlib as mpl
import numpy as np
import orjson
import pandas as pd
from matplotlib.figure import Figure

from aistack.contract import RankingUseCase
from aistack.errors import ConfigError
from aistack.htmlpage import RC, figure, header, svg, table, write_page
from aistack.monitoring.alerts import AlertEvent, evaluate_alerts, latest_alerts
from aistack.monitoring.drift import psi_sorted
from aistack.monitoring.report import alerts_section
from aistack.training.recommend import item_popularity
from aistack.workspace import Workspace

POPULARITY_BINS = 10
DRIFT_PSI = 0.2
"""PSI above which the shown items' popularity is reported as drifted."""
COVERAGE_DRAWS = 5


@dataclass
class RecommendationMonitor:
    """Per-day figures of served recommendations, and the report written."""

    daily: pd.DataFrame
    catalogue: int
    reference_mean_popularity: float
    observed: dict[str, float] = field(default_factory=dict)
    alerts: list[AlertEvent] = field(default_factory=list)
    report: Path | None = None

    @property
    def drifted_days(self) -> list[str]:
        """Days whose popularity PSI is above `DRIFT_PSI`."""
        return [str(d) for d in self.daily.loc[self.daily["drifted"], "day"]]


def _popularity(ws: Workspace, uc: RankingUseCase) -> pd.Series:
    """Interactions per interacted item id (`item_popularity`: gold's table)."""
    return item_popularity(ws.lake, uc)[0]


def _catalogue(ws: Workspace, uc: RankingUseCase, popularity: pd.Series) -> int:
    if uc.items is None:
        return len(popularity)
    return ws.lake.rows(uc.items)


def monitor_recommendations(
    ws: Workspace,
    uc: RankingUseCase,
    *,
    report_path: Path | None,
    since: datetime | None = None,
) -> RecommendationMonitor:
    """Coverage and popularity drift per day of the answers logged since `since`
    (default: all); the report."""
    if not ws.lake.exists(uc.log_table):
        msg = f"no logged recommendations for {uc.name}: serve some traffic first"
        raise ConfigError(msg)
    if not ws.lake.exists(uc.recommendations_table):
        msg = f"{uc.recommendations_table} does not exist: run {uc.name} first"
        raise ConfigError(msg)
    log = ws.lake.read(uc.log_table).to_pandas()
    if since is not None:
        log = log[log["logged_at"] >= since]
    if log.empty:
        raise ConfigError(f"no recommendations of {uc.name} logged in the window")
    popularity = _popularity(ws, uc)
    catalogue = _catalogue(ws, uc, popularity)
    batch = ws.lake.read(uc.recommendations_table, columns=[uc.user, uc.item])
    batch_frame = batch.to_pandas()
    reference = np.sort(
        popularity.reindex(batch_frame[uc.item]).fillna(0).to_numpy(float)
    )
    rows = []
    for day, part in log.groupby(log["logged_at"].dt.floor("D")):
        shown = [i for items in part["items"] for i in orjson.loads(items)]
        values = np.sort(popularity.reindex(shown).fillna(0).to_numpy(float))
        psi = psi_sorted(reference, values, POPULARITY_BINS) if len(values) else 0.0
        rows.append(
            {
                "day": day.date(),
                "answers": len(part),
                "users": int(part["user_id"].nunique()),
                "cold_start_share": float(part["cold_start"].mean()),
                "items_shown": len(set(shown)),
                "coverage": len(set(shown)) / catalogue,
                "mean_popularity": float(values.mean()) if len(values) else 0.0,
                "popularity_psi": psi,
                "drifted": psi > DRIFT_PSI,
            }
        )
    shown = [i for items in log["items"] for i in orjson.loads(items)]
    values = np.sort(popularity.reindex(shown).fillna(0).to_numpy(float))
    observed = {
        "popularity_psi": psi_sorted(reference, values, POPULARITY_BINS),
        "coverage_drop": coverage_drop(batch_frame, uc, len(set(shown)), len(log)),
    }
    result = RecommendationMonitor(
        pd.DataFrame(rows), catalogue, float(reference.mean()), observed
    )
    result.alerts = evaluate_alerts(
        ws.lake,
        uc.name,
        uc.alerts,
        observed,
        webhook_url=ws.settings.alert_webhook_url,
        source="monitor",
    )
    if report_path is not None:
        alerts = latest_alerts(ws.lake, uc.name)
        result.report = _report(report_path, uc, result, alerts)
    return result


def coverage_drop(
    batch: pd.DataFrame, uc: RankingUseCase, distinct_shown: int, answers: int
) -> float:
    """1 - distinct items shown / distinct items of `answers` random users' batch
    top-K (mean of `COVERAGE_DRAWS` seeded draws; every user when fewer)."""
    lists = batch.groupby(uc.user)[uc.item].agg(list)
    n = min(answers, len(lists))
    rng = np.random.default_rng(0)
    expected = np.mean(
        [
            len(
                {
                    i
                    for row in rng.choice(len(lists), n, replace=False)
                    for i in lists.iloc[row]
                }
            )
            for _ in range(COVERAGE_DRAWS)
        ]
    )
    return float(1.0 - distinct_shown / expected) if expected else 0.0


def _report(
    path: Path,
    uc: RankingUseCase,
    result: RecommendationMonitor,
    alerts: list[dict[str, str]],
) -> Path:
    daily = result.daily
    figures = []
    for column, label in (
        ("coverage", "catalogue coverage"),
        ("popularity_psi", f"popularity PSI (drift above {DRIFT_PSI})"),
    ):
        with mpl.rc_context(RC):
            fig = Figure(figsize=(5, 3))
            ax = fig.subplots()
            ax.plot(daily["day"].astype(str), daily[column], marker="o")
            if column == "popularity_psi":
                ax.axhline(DRIFT_PSI, color="#c00", linestyle=":")
            ax.set(ylabel=column)
            figures.append(figure(svg(fig), label))
    summary = {
        "catalogue items": f"{result.catalogue:,}",
        "answers logged": f"{int(daily['answers'].sum()):,}",
        "reference": f"{uc.recommendations_table} (mean popularity "
        f"{result.reference_mean_popularity:.1f})",
        **{f"window {k}": f"{v:.3f}" for k, v in result.observed.items()},
    }
    rows = daily.itertuples(index=False)
    marks = ["drifted" if d else "" for d in daily["drifted"]]
    return write_page(
        path,
        f"AI Stack monitoring: {uc.name}",
        [
            header(f"AI Stack monitoring: {uc.name} (served recommendations)", summary),
            alerts_section(alerts),
            "<section><h2>Per day</h2>"
            + table(list(daily.columns), rows, marks)
            + "</section>",
            '<section><h2>Over time</h2><div class="grid">'
            + "".join(figures)
            + "</div></section>",
        ],
    )
