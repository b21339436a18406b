"""`aistack monitor`: drift and live performance of the served model, alerts, report.

Reference = the champion's training rows, rebuilt from the table versions on its
run (lineage); current = a window of the prediction log. Labels that arrived
later are joined to logged predictions by id, and the declared metrics are
computed per day beside their training-time values. During a rollout the
challenger's live primary metric is compared with the champion's on the same
days, and a drop beyond the declared guard rolls it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from aistack.contract import UseCase
from aistack.contract.model import gain
from aistack.errors import ConfigError, RegistryError
from aistack.monitoring.abtest import ABResult, compare
from aistack.monitoring.alerts import AlertEvent, evaluate_alerts, latest_alerts
from aistack.monitoring.consistency import ConsistencyReport, check_consistency
from aistack.monitoring.drift import ColumnDrift, detect_drift, drift_frame
from aistack.monitoring.report import render_report
from aistack.registry.artifacts import load_model
from aistack.registry.rollout import end_rollout, read_rollout
from aistack.training.sets import build_training_set
from aistack.training.tracking import lineage_of, tracking
from aistack.workspace import Workspace

OVERLAY_ROWS = 20_000
_ACTOR = "aistack-monitor"


@dataclass
class MonitorResult:
    """What one monitoring run found and did."""

    champion: int
    reference_rows: int
    current_rows: int
    drift: list[ColumnDrift]
    performance: pd.DataFrame
    training_metrics: dict[str, float]
    alerts: list[AlertEvent] = field(default_factory=list)
    rollout_action: str | None = None
    report: Path | None = None
    consistency: ConsistencyReport | None = None

    @property
    def drift_share(self) -> float:
        """Share of drifted columns (features and score)."""
        return (
            sum(d.drifted for d in self.drift) / len(self.drift) if self.drift else 0.0
        )


def prediction_frame(
    ws: Workspace, use_case: UseCase, *, since: datetime | None = None
) -> pd.DataFrame:
    """Logged predictions with their payload and feature columns decoded."""
    table = f"ops.{use_case.name}_prediction_log"
    if not ws.lake.exists(table):
        return pd.DataFrame()
    window = None if since is None else pc.field("logged_at") >= pa.scalar(since)
    log = pl.from_arrow(ws.lake.read(table, where=window))  # only the window
    assert isinstance(log, pl.DataFrame)
    if log.height == 0:
        return pd.DataFrame()
    payload = log.get_column("payload").str.json_decode().struct.unnest()
    features = log.get_column("features").str.json_decode().struct.unnest()
    base = log.select(
        "request_id", "logged_at", "score", "decision", "model_version", "arm"
    )
    frame = pl.concat(
        [
            base,
            payload.drop([c for c in payload.columns if c in base.columns]),
            features.drop([c for c in features.columns if c in payload.columns]),
        ],
        how="horizontal",
    ).to_pandas()
    ts = clock(use_case)
    frame[ts] = pd.to_datetime(frame[ts])
    return frame


def clock(use_case: UseCase) -> str:
    """The column that places a logged row in time: its own timestamp, or (rows
    without a clock) when it was scored, `logged_at`."""
    return use_case.labels.timestamp or "logged_at"


def with_labels(ws: Workspace, use_case: UseCase, frame: pd.DataFrame) -> pd.DataFrame:
    """Logged rows whose label has arrived, with it as `label`."""
    labels = use_case.labels
    if frame.empty or not ws.lake.exists(labels.table):
        return frame.iloc[0:0].assign(label=pd.Series(dtype="float64"))
    known = ws.lake.read(labels.table, columns=[labels.id, labels.label]).to_pandas()
    known = known.assign(request_id=known[labels.id].astype(str)).drop(
        columns=[labels.id]
    )
    joined = frame.merge(known, on="request_id", how="inner")
    return joined.rename(columns={labels.label: "label"})


def daily_metrics(use_case: UseCase, labelled: pd.DataFrame) -> pd.DataFrame:
    """The declared metrics per day of the rows' own timestamps (or scoring days)."""
    if labelled.empty:
        return pd.DataFrame(columns=["day", *use_case.metrics])
    ts = clock(use_case)
    rows = []
    for day, part in labelled.groupby(labelled[ts].dt.floor("D")):
        values = {name: metric(part) for name, metric in use_case.metrics.items()}
        rows.append({"day": day, "n": len(part), **values})
    return pd.DataFrame(rows)


def scores_by_day(use_case: UseCase, frame: pd.DataFrame) -> pd.DataFrame:
    """Score quantiles per day (the distribution over time)."""
    if frame.empty:
        return pd.DataFrame(columns=["day", "n", "mean", "p10", "p50", "p90"])
    day = frame[clock(use_case)].dt.floor("D")
    grouped = frame.groupby(day)["score"]
    return (
        pd.DataFrame(
            {
                "n": grouped.size(),
                "mean": grouped.mean(),
                "p10": grouped.quantile(0.1),
                "p50": grouped.quantile(0.5),
                "p90": grouped.quantile(0.9),
            }
        )
        .rename_axis("day")
        .reset_index()
    )


def reference_frame(
    ws: Workspace, use_case: UseCase, version: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The training rows of model `version` (features and score), and its metrics."""
    run_id = ws.registry.client.get_model_version(use_case.name, str(version)).run_id
    if not run_id:
        raise RegistryError(f"{use_case.name} version {version} has no run")
    lineage = lineage_of(run_id)
    run = mlflow.get_run(run_id)
    data = build_training_set(
        ws.lake,
        use_case,
        as_of=datetime.now(UTC),
        lineage=lineage,
        seed=int(run.data.params.get("split.seed", ws.settings.seed)),
    )
    model = load_model(ws.registry, use_case.name, version)
    inputs = data.train[use_case.model_inputs]
    frame = inputs[use_case.feature_names].assign(score=model.predict(inputs))
    metrics = dict(run.data.metrics)
    return frame.reset_index(drop=True), {
        k: metrics[k] for k in use_case.metrics if k in metrics
    }


def _rollout_guard(
    ws: Workspace, use_case: UseCase, labelled: pd.DataFrame
) -> str | None:
    rollout = read_rollout(ws.registry, use_case.name)
    if rollout is None or not rollout.active or labelled.empty:
        return None
    primary = use_case.gates.primary_metric
    metric = use_case.metrics[primary]
    arms = {
        arm: labelled[labelled["arm"] == arm]
        for arm in ("champion", "challenger" if rollout.mode == "canary" else "shadow")
    }
    if any(part["label"].nunique() < 2 for part in arms.values()):  # noqa: PLR2004
        return None
    values = {arm: metric(part) for arm, part in arms.items()}
    champion, challenger = values["champion"], list(values.values())[1]
    drop = -gain(metric, challenger, champion)
    if drop > use_case.monitoring.guards.max_performance_drop:
        why = (
            f"automatic rollback of {rollout.mode} version {rollout.version}: live "
            f"{primary} {challenger:.4f} vs champion {champion:.4f} "
            f"(drop {drop:.4f} > {use_case.monitoring.guards.max_performance_drop})"
        )
        end_rollout(
            ws.registry,
            use_case.name,
            status="rolled_back",
            reason=why,
            actor=_ACTOR,
            judged=rollout,
        )
        return why
    return None


def run_monitor(
    ws: Workspace,
    use_case: UseCase,
    *,
    window: timedelta | None,
    report_path: Path | None,
) -> MonitorResult:
    """Drift, live performance, alerts and the rollout guard; writes the report."""
    with tracking(ws.settings.mlflow_uri):
        return _monitor(ws, use_case, window=window, report_path=report_path)


def _monitor(
    ws: Workspace,
    use_case: UseCase,
    *,
    window: timedelta | None,
    report_path: Path | None,
) -> MonitorResult:
    champion = ws.registry.version_of(use_case.name, "champion")
    if champion is None:
        raise ConfigError(f"use case {use_case.name}: no champion to monitor yet")
    since = datetime.now(UTC) - window if window is not None else None
    served = prediction_frame(ws, use_case, since=since)
    if served.empty:
        msg = f"no logged predictions for {use_case.name}: serve some traffic first"
        raise ConfigError(msg)
    answered = served[served["arm"] != "shadow"]
    reference, training_metrics = reference_frame(ws, use_case, champion)
    columns = [*use_case.feature_names, "score"]
    drift = detect_drift(
        reference,
        answered[columns],
        settings=use_case.monitoring.drift,
        columns=columns,
    )
    labelled = with_labels(ws, use_case, served)
    performance = daily_metrics(use_case, labelled[labelled["arm"] == "champion"])
    result = MonitorResult(
        champion, len(reference), len(answered), drift, performance, training_metrics
    )
    observed = {"drift_share": result.drift_share}
    primary = use_case.gates.primary_metric
    if not performance.empty and primary in training_metrics:
        live = float(np.nanmean(performance[primary]))
        if not np.isnan(live):
            trained = training_metrics[primary]
            observed["performance_drop"] = -gain(
                use_case.metrics[primary], live, trained
            )
    result.alerts = evaluate_alerts(
        ws.lake,
        use_case.name,
        use_case.monitoring.alerts,
        observed,
        webhook_url=ws.settings.alert_webhook_url,
        source="monitor",
    )
    result.rollout_action = _rollout_guard(ws, use_case, labelled)
    if report_path is not None:
        result.report = _report(
            ws,
            use_case,
            result,
            reference=reference,
            current=answered,
            path=report_path,
        )
    return result


def _report(
    ws: Workspace,
    use_case: UseCase,
    result: MonitorResult,
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    path: Path,
) -> Path:
    overlays = {
        d.column: (
            reference[d.column].dropna().to_numpy()[:OVERLAY_ROWS],
            current[d.column].dropna().to_numpy()[:OVERLAY_ROWS],
        )
        for d in result.drift
        if d.drifted
    }
    alerts = latest_alerts(ws.lake, use_case.name)
    try:
        consistency: ConsistencyReport | None = check_consistency(ws.lake, use_case)
    except ConfigError:  # a log written before served values were logged
        consistency = None
    result.consistency = consistency
    return render_report(
        path,
        title=f"AI Stack monitoring: {use_case.name}",
        summary={
            "champion": f"{use_case.name} version {result.champion}",
            "reference rows (training set)": f"{result.reference_rows:,}",
            "current rows (prediction log)": f"{result.current_rows:,}",
            "drifted columns": f"{result.drift_share:.0%} of {len(result.drift)}",
            "generated at (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        },
        drift=drift_frame(result.drift),
        overlays=overlays,
        scores_by_day=scores_by_day(use_case, current),
        performance=result.performance.drop(columns=["n"], errors="ignore"),
        training_metrics=result.training_metrics,
        alerts=alerts,
        consistency=consistency.frame()
        if consistency and consistency.compared
        else None,
    )


def ab_test(ws: Workspace, use_case: UseCase) -> ABResult:
    """The declared business metric, champion (A) vs canary challenger (B)."""
    business = use_case.monitoring.business
    if business is None:
        raise ConfigError(f"use case {use_case.name} declares no business metric")
    labelled = with_labels(ws, use_case, prediction_frame(ws, use_case))
    if labelled.empty:
        raise ConfigError(f"no labelled predictions for {use_case.name} yet")
    outcome = business.outcome(labelled)
    arms = {
        arm: outcome[labelled["arm"] == arm].dropna().to_numpy(np.float64)
        for arm in ("champion", "challenger")
    }
    return compare(
        business.name,
        business.kind,
        arms["champion"],
        arms["challenger"],
        effect=business.minimum_detectable_effect,
    )
