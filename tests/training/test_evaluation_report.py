"""Every training run writes an evaluation report people can open: checked in a
real headless browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from matplotlib import image

from aistack.contract import Trainer
from aistack.runner import run
from aistack.training.tracking import tracking
from cancer_usecase import cancer_use_case, constant_model
from conftest import make_workspace
from monitoring.test_report import chromium


def test_a_training_run_writes_its_evaluation_report(tmp_path: Path) -> None:
    uc = cancer_use_case(
        extra_trainers=(Trainer("constant", constant_model, supervised=True),)
    )
    ws = make_workspace(tmp_path / "ws")
    report = run(uc, ws, uc.params(), stages=("ingest", "silver", "gold", "train"))
    path = report.evaluation_report
    assert path is not None and path.is_file()
    text = path.read_text()
    for expected in ("logistic", "constant", "ROC curve", "Precision-recall", "FAIL"):
        assert expected in text
    assert "http://" not in text and "https://" not in text  # self-contained
    assert "<script" not in text
    with tracking(ws.settings.mlflow_uri):
        for candidate in report.candidates:
            names = [
                a.path for a in mlflow.MlflowClient().list_artifacts(candidate.run_id)
            ]
            assert path.name in names
    if shutil.which("chromium") is None:
        pytest.skip("headless browser check needs Debian's `chromium` on PATH")
    png = tmp_path / "evaluation.png"
    shot = chromium(
        tmp_path,
        "--window-size=1280,2400",
        "--hide-scrollbars",
        f"--screenshot={png}",
        path.resolve().as_uri(),
    )
    assert png.is_file(), shot.stderr[-2000:]
    pixels = image.imread(str(png))[..., :3]
    inked = (pixels.min(axis=-1) < 0.85).sum()
    assert inked > 30_000, f"only {inked} non-white pixels"
