"""Batch scoring: re-scoring a period replaces that period's predictions of the
same model version (no second copy); the replaced rows stay in the Delta log."""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow.compute as pc
from scipy.special import logit

from aistack.runner import run
from aistack.serving.batch import score_range
from aistack.training.tracking import tracking
from cancer_usecase import cancer_use_case


def test_rescoring_a_period_replaces_its_predictions(workspace) -> None:
    uc = cancer_use_case()
    report = run(uc, workspace, uc.params())
    lake, table = workspace.lake, uc.predictions_table
    assert report.scoring is not None
    first = lake.version(table)
    rows = lake.rows(table)
    start = pc.min(lake.read(table).column("exam_time")).as_py()
    week = (start, start + timedelta(days=7))  # 28 exams, 4 a day
    with tracking(workspace.settings.mlflow_uri):
        again = score_range(lake, uc, workspace.registry, start=week[0], end=week[1])
        assert again.rows == 28 and not again.skipped
        assert lake.rows(table) == rows  # replaced, not appended
        ids = lake.read(table).column("exam_id").to_pylist()
        assert len(ids) == len(set(ids))
        skipped = score_range(lake, uc, workspace.registry, start=week[0], end=week[1])
        assert skipped.skipped  # same inputs, same model: nothing written
    latest = lake.read(table)
    in_week = pc.less(latest.column("exam_time"), week[1])
    before = lake.read(table, version=first)
    assert pc.all(  # the week was scored again: later scored_at than the first copy
        pc.greater(
            pc.min(latest.filter(in_week).column("scored_at")),
            pc.max(before.column("scored_at")),
        )
    ).as_py()
    assert before.num_rows == rows  # the first copy stays readable in the log


def test_explain_writes_each_score_s_explanation_as_json(workspace) -> None:
    uc = cancer_use_case()
    run(uc, workspace, uc.params())
    lake, table = workspace.lake, uc.predictions_table
    start = pc.min(lake.read(table).column("exam_time")).as_py()
    week = (start, start + timedelta(days=7))
    with tracking(workspace.settings.mlflow_uri):
        explained = score_range(
            lake, uc, workspace.registry, start=week[0], end=week[1], explain=True
        )
        assert explained.rows == 28 and not explained.skipped
        rows = lake.read(table).to_pylist()
        in_week = [r for r in rows if r["exam_time"] < week[1]]
        assert all(r["explanation"] is None for r in rows if r not in in_week)
        for r in in_week:
            e = json.loads(r["explanation"])
            total = e["base_value"] + sum(c["contribution"] for c in e["contributions"])
            assert abs(total + e["rest"] - e["margin"]) < 1e-9
            if abs(e["margin"]) < 20:  # logit(score) still exact
                assert abs(e["margin"] - logit(r["score"])) < 1e-6
        plain = score_range(lake, uc, workspace.registry, start=week[0], end=week[1])
        assert plain.rows == 28 and not plain.skipped  # the flag is an input
    assert all(r["explanation"] is None for r in lake.read(table).to_pylist())
