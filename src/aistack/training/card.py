"""Model card: one self-contained HTML page per registered model version.

Intended use, data lineage (tables@versions, and erasures since), metrics on
the test rows overall and per declared slice, the gaps between a slice's
groups in true and false positive rates, a calibration plot and every gate's
verdict. Built from what the training run recorded (metrics, gates, lineage
tags and the scored test rows reduced to label, score and slice groups), so
`aistack card` rebuilds it for any version without retraining.
"""

from __future__ import annotations

import html
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from aistack.contract import UseCase
from aistack.errors import RegistryError
from aistack.htmlpage import RC, figure, header, svg, table, write_page
from aistack.training.metrics import CALIBRATION_BINS
from aistack.training.report import safe_metric
from aistack.training.tracking import ERASURE_TAG, LINEAGE_TAG

CARD_SCORES = "card/test_scores.parquet"
SLICE_PREFIX = "slice_"


def card_scores(use_case: UseCase, test_scores: pd.DataFrame) -> pd.DataFrame:
    """The test rows as the card needs them: label, score and each declared
    slice's group (no id, no other column)."""
    out = pd.DataFrame(
        {
            "label": test_scores["label"].to_numpy(),
            "score": test_scores["score"].to_numpy(),
        }
    )
    for name, group in use_case.evaluation.slices.items():
        out[SLICE_PREFIX + name] = group(test_scores).astype(str).to_numpy()
    return out


def log_card_scores(
    client: MlflowClient, run_id: str, use_case: UseCase, test_scores: pd.DataFrame
) -> None:
    """Attach the card's test rows to the run (what `write_model_card` reads)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(CARD_SCORES).name
        card_scores(use_case, test_scores).to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(CARD_SCORES).parent))


def write_model_card(
    client: MlflowClient, use_case: UseCase, version: int, path: Path
) -> Path:
    """Write the card of `use_case`'s model `version` at `path`."""
    try:
        mv = client.get_model_version(use_case.name, str(version))
    except Exception as exc:
        msg = f"--version: {use_case.name} has no model version {version}"
        raise RegistryError(msg) from exc
    run_id = str(mv.run_id)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, CARD_SCORES, tmp)
        except Exception as exc:
            msg = (
                f"{use_case.name} v{version}: its run holds no {CARD_SCORES} "
                "(trained before model cards); retrain to get a card"
            )
            raise RegistryError(msg) from exc
        scores = pd.read_parquet(local)
    tags = {**run.data.tags, **mv.tags}
    threshold = use_case.serving.threshold if use_case.serving else 0.5
    with mpl.rc_context(RC):
        sections = [
            header(
                f"Model card: {use_case.name} version {version}",
                {
                    "model": tags.get("mlflow.runName", ""),
                    "registered": datetime.fromtimestamp(
                        mv.creation_timestamp / 1000, UTC
                    ).strftime("%Y-%m-%d %H:%M UTC"),
                    "run": run_id,
                    "task": use_case.task,
                    "test rows": str(len(scores)),
                    "decision threshold": f"{threshold:g}",
                },
            ),
            _intended_use(use_case),
            _lineage(tags),
            _metrics(use_case, run.data.metrics),
            _slices(use_case, scores, threshold),
            _calibration(scores),
            _gates(tags),
        ]
    return write_page(path, f"{use_case.name} v{version} model card", sections)


def _intended_use(use_case: UseCase) -> str:
    text = use_case.evaluation.intended_use or use_case.description
    return f"<section><h2>Intended use</h2><p>{_escape(text)}</p></section>"


def _escape(text: str) -> str:
    return html.escape(text)


def _lineage(tags: dict[str, str]) -> str:
    prefix = f"{LINEAGE_TAG}."
    rows = [
        [k[len(prefix) :], v] for k, v in sorted(tags.items()) if k.startswith(prefix)
    ]
    erasures = [
        [k[len(ERASURE_TAG) + 1 :], v]
        for k, v in sorted(tags.items())
        if k.startswith(f"{ERASURE_TAG}.")
    ]
    out = "<section><h2>Data lineage</h2>" + table(["table", "version"], rows)
    if erasures:
        out += "<h3>Erasures since training</h3>" + table(
            ["erasure", "record"], erasures
        )
    return out + "</section>"


def _metrics(use_case: UseCase, recorded: dict[str, float]) -> str:
    rows = [[m, recorded.get(m, float("nan"))] for m in use_case.metrics]
    return (
        "<section><h2>Metrics (test rows)</h2>"
        + table(["metric", "value"], rows)
        + "</section>"
    )


def _rates(part: pd.DataFrame, threshold: float) -> tuple[float, float]:
    decided = part["score"] >= threshold
    positives = part["label"] == 1
    tpr = float(decided[positives].mean()) if positives.any() else float("nan")
    fpr = float(decided[~positives].mean()) if (~positives).any() else float("nan")
    return tpr, fpr


def _slices(use_case: UseCase, scores: pd.DataFrame, threshold: float) -> str:
    metrics = list(use_case.metrics)
    rows, gaps = [], []
    for column in (c for c in scores.columns if c.startswith(SLICE_PREFIX)):
        name = column[len(SLICE_PREFIX) :]
        rates = []
        for group, part in scores.groupby(column, sort=True):
            tpr, fpr = _rates(part, threshold)
            rates.append((tpr, fpr))
            values = [safe_metric(use_case.metrics[m], part) for m in metrics]
            rows.append(
                [name, group, len(part), int(part["label"].sum()), *values, tpr, fpr]
            )
        tprs = [t for t, _ in rates if not np.isnan(t)]
        fprs = [f for _, f in rates if not np.isnan(f)]
        gaps.append(
            [
                name,
                max(tprs) - min(tprs) if tprs else float("nan"),
                max(fprs) - min(fprs) if fprs else float("nan"),
            ]
        )
    if not rows:
        return ""
    headers = ["slice", "group", "rows", "positives", *metrics, "TPR", "FPR"]
    return (
        "<section><h2>Metrics per slice</h2>"
        + f'<p class="note">TPR and FPR at the decision threshold {threshold:g}.</p>'
        + table(headers, rows)
        + "<h3>Gaps between groups (max - min)</h3>"
        + table(["slice", "TPR gap", "FPR gap"], gaps)
        + "</section>"
    )


def _calibration(scores: pd.DataFrame) -> str:
    bins = pd.cut(
        scores["score"].clip(0, 1),
        list(np.linspace(0, 1, CALIBRATION_BINS + 1)),
        include_lowest=True,
    )
    grouped = scores.groupby(bins, observed=True)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", label="perfect")
    ax.plot(grouped["score"].mean(), grouped["label"].mean(), marker="o", label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate")
    ax.legend(loc="best", fontsize=8)
    return (
        "<section><h2>Calibration</h2>"
        + figure(svg(fig), f"Calibration ({CALIBRATION_BINS} score bins)")
        + "</section>"
    )


def _gates(tags: dict[str, str]) -> str:
    rows = []
    for name, value in sorted(tags.items()):
        if name.startswith("gate."):
            verdict, _, detail = value.partition(": ")
            rows.append([name[len("gate.") :], verdict.lower(), detail])
    classes = ["" if r[1] == "pass" else "drifted" for r in rows]
    return (
        "<section><h2>Gates</h2>"
        + table(["gate", "verdict", "detail"], rows, classes)
        + "</section>"
    )
