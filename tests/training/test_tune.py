"""Tuning: Optuna TPE with pruning on prequential folds (time split) or a cut of
the train part (other splits), one nested MLflow run per trial, deterministic for
a seed; `run` trains with the last tuned parameters and its key changes."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from datetime import datetime

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import aistack.training.tune as tune_mod
from aistack.contract import Choice, FloatRange, IntRange, Split, Trainer, Tuning
from aistack.runner import run, tune
from aistack.training.sets import build_training_set
from aistack.training.tracking import tracking
from aistack.training.tune import (
    TUNING_TAG,
    declared_values,
    prequential_folds,
    split_folds,
)
from cancer_usecase import cancer_use_case
from conftest import make_workspace
from monitoring.test_report import chromium

C = "logisticregression__C"


def _use_case():
    trainers = (
        Trainer(
            "logistic",
            lambda seed: make_pipeline(
                StandardScaler(), LogisticRegression(random_state=seed)
            ),
            search_space={C: FloatRange(1e-3, 10.0, log=True)},
        ),
        Trainer(
            "tree",
            lambda seed: DecisionTreeClassifier(random_state=seed),
            search_space={
                "max_depth": IntRange(1, 6),
                "class_weight": Choice((None, "balanced")),
            },
        ),
    )
    return dataclasses.replace(
        cancer_use_case(),
        split=Split(train_days=30, delay_days=2, test_days=14),
        tuning=Tuning(folds=3, startup_trials=2),
        trainers=trainers,
    )


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("tune") / "ws")
    uc = _use_case()
    run(uc, ws, uc.params(), stages=("ingest", "silver", "gold"))
    return uc, ws


def test_prequential_folds_slide_back_before_the_test_period(landed) -> None:
    uc, ws = landed
    lineage = ws.lake.versions(["silver.exams", "gold.cancer_exam_measures"])
    folds = prequential_folds(ws.lake, uc, as_of=datetime(2100, 1, 1), lineage=lineage)
    data = build_training_set(ws.lake, uc, as_of=datetime(2100, 1, 1))
    assert len(folds) == 3
    assert folds[0].period["valid_end"] == data.periods["train_end"]
    starts = [pd.Timestamp(f.period["valid_start"]) for f in folds]
    assert [(a - b).days for a, b in itertools.pairwise(starts)] == [14, 14]
    for fold in folds:
        gap = fold.valid["exam_time"].min() - fold.train["exam_time"].max()
        assert gap >= pd.Timedelta(days=2)  # the delay between train and valid
        assert fold.valid["exam_time"].max() < data.test["exam_time"].min()


def test_non_time_split_tunes_on_a_cut_of_the_train_part(landed) -> None:
    uc, ws = landed
    stratified = dataclasses.replace(
        uc, split=Split(kind="stratified", fractions=(0.7, 0.3))
    )
    (fold,) = split_folds(ws.lake, stratified, as_of=datetime(2100, 1, 1), seed=7)
    test = build_training_set(ws.lake, stratified, as_of=datetime(2100, 1, 1), seed=7)
    seen = set(fold.train["exam_id"]) | set(fold.valid["exam_id"])
    assert seen == set(test.train["exam_id"])
    assert not seen & set(test.test["exam_id"])


def test_declared_values_in_their_ranges_are_the_first_trial() -> None:
    logistic, tree = _use_case().trainers
    assert declared_values(logistic, 0) == {C: 1.0}
    # max_depth=None is outside IntRange(1, 6): left to the sampler
    assert declared_values(tree, 0) == {"class_weight": None}
    narrow = dataclasses.replace(
        logistic, search_space={C: FloatRange(2.0, 10.0)}, params={}
    )
    assert declared_values(narrow, 0) == {}


def test_tune_logs_nested_trials_is_deterministic_and_feeds_run(
    landed, tmp_path
) -> None:
    uc, ws = landed
    (first,) = tune(uc, ws, trainers=["logistic"], trials=6)
    assert first.trials == 6 and first.metric == "roc_auc"
    assert first.history[0]["params"] == {C: 1.0}  # the declared value first
    assert set(first.best_params) == {C}
    client = MlflowClient(ws.settings.mlflow_uri)
    children = client.search_runs(
        [client.get_run(first.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'",
    )
    assert len(children) == 6
    assert client.get_run(first.run_id).data.tags[TUNING_TAG] == "logistic"
    (again,) = tune(uc, ws, trainers=["logistic"], trials=6)
    assert [t["params"] for t in again.history] == [t["params"] for t in first.history]
    assert again.best_params == first.best_params
    # every trainer with a space, by time; pruning may stop trials early
    results = tune(uc, ws, seconds=1)
    assert {r.trainer for r in results} == {"logistic", "tree"}
    report = run(uc, ws, uc.params(), stages=("train",))
    logistic = next(c for c in report.candidates if c.trainer == "logistic")
    with tracking(ws.settings.mlflow_uri):
        params = mlflow.get_run(logistic.run_id).data.params
    tuned = next(r for r in results if r.trainer == "logistic").best_params[C]
    assert float(params[f"tuned.{C}"]) == pytest.approx(tuned)
    assert float(params[f"est.{C}"]) == pytest.approx(tuned)
    _check_tuning_in_report(report.evaluation_report, results, tmp_path)


def _check_tuning_in_report(path, results, tmp_path) -> None:
    """The run's evaluation report shows each trainer's last tuning: its run,
    every trial (state, objective, parameters), the choice and a plot; the
    browser parses it."""
    assert path is not None
    text = path.read_text()
    section = text[text.index("<h2>Tuning history</h2>") :]
    for result in results:
        assert f"<h3>{result.trainer}</h3>" in section
        assert result.run_id in section
        assert f"{result.trainer}: roc_auc per trial" in section
        for trial in result.history:
            value = "—" if trial["value"] is None else f"{trial['value']:.3f}"
            row = (
                f'<td class="num">{trial["number"]}</td><td>{trial["state"]}</td>'
                f'<td class="num">{value}</td>'
            )
            assert row in section
    assert section.count("<svg") == len(results)
    if shutil.which("chromium") is None:
        pytest.skip("headless browser check needs Debian's `chromium` on PATH")
    dom = chromium(tmp_path, "--dump-dom", path.resolve().as_uri()).stdout
    assert "Tuning history" in dom and "best so far" in dom


def test_a_trial_running_past_the_budget_stops_at_its_next_fold(
    landed, monkeypatch
) -> None:
    """Optuna checks `timeout` between trials only; a trial that started in time
    stops at its next fold once the budget is spent (the first trial always
    completes, so there is a choice). The budget's clock here jumps an hour a
    reading (the budget is one), so only the first trial fits in it."""
    uc, ws = landed
    ticks = itertools.count()
    monkeypatch.setattr(tune_mod, "clock", lambda: 3600.0 * next(ticks))
    (result,) = tune(uc, ws, trainers=["logistic"], trials=4, seconds=3600)
    states = [t["state"] for t in result.history]
    assert states[0] == "complete"
    client = MlflowClient(ws.settings.mlflow_uri)
    children = client.search_runs(
        [client.get_run(result.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'",
    )
    stopped = [
        r for r in children if r.data.tags["state"] == "pruned: over the time budget"
    ]
    assert stopped and states.count("pruned") >= len(stopped)
    for run_ in stopped:  # one fold fitted, then stopped before the second
        history = client.get_metric_history(run_.info.run_id, "fold.roc_auc")
        assert len(history) == 1
    assert result.best_params == result.history[0]["params"]
