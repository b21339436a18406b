"""Declarations check themselves; one contract test covers every registered use case."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import pytest

from aistack.contract import (
    AggregationView,
    AlertRule,
    Feature,
    FeatureView,
    Gates,
    GoldTable,
    RankingUseCase,
    Split,
    UseCase,
    discover,
    get_any_use_case,
    get_use_case,
)
from aistack.errors import DeclarationError, UseCaseNotFoundError
from cancer_usecase import cancer_use_case
from task_usecases import sensors

REGISTERED = sorted(discover())


def test_fraud_is_registered_through_its_entry_point() -> None:
    assert "fraud" in REGISTERED


LABELLED = [n for n in REGISTERED if isinstance(discover()[n], UseCase)]
RANKING = [n for n in REGISTERED if isinstance(discover()[n], RankingUseCase)]


def test_the_shipped_use_cases_are_registered() -> None:
    assert {"fraud", "patient_risk"} <= set(LABELLED) and "recommendations" in RANKING


def replace_gold(
    gold: GoldTable, name: str, key: tuple[str, ...], inputs: dict | None = None
) -> GoldTable:
    return dataclasses.replace(gold, name=name, key=key, inputs=inputs or gold.inputs)


@pytest.mark.parametrize("name", RANKING)
def test_ranking_use_case_contract(name: str) -> None:
    uc = get_any_use_case(name)
    assert isinstance(uc, RankingUseCase)
    uc.params()
    silver = {f"silver.{s.name}" for s in uc.silver}
    assert uc.interactions in silver and (uc.items is None or uc.items in silver)
    assert uc.gates.primary_metric in uc.metric_names
    for trainer in uc.trainers:
        model = trainer.build(0)
        assert all(hasattr(model, m) for m in ("fit", "score", "score_items"))
    with pytest.raises(DeclarationError, match="ranking use case: monitor does not"):
        get_use_case(name, action="monitor")
    for gold in uc.gold:
        assert set(gold.inputs.values()) <= silver
    with pytest.raises(DeclarationError, match="expected one of popularity_psi"):
        dataclasses.replace(uc, alerts=(AlertRule("x", "drift_share", 0.1),))
    if uc.gold:
        twice = (*uc.gold, uc.gold[0])
        with pytest.raises(DeclarationError, match="gold table names repeat"):
            dataclasses.replace(uc, gold=twice)
        elsewhere = dataclasses.replace(uc.gold[0], inputs={"x": "silver.nowhere"})
        with pytest.raises(DeclarationError, match="reads undeclared"):
            dataclasses.replace(uc, gold=(elsewhere,))
    declared = {g.name: g for g in uc.gold}
    for role, table in (("history", uc.history), ("item_features", uc.item_features)):
        if table is not None:  # training reads it: a declared gold table
            assert declared[table].key == (
                (uc.user,) if role == "history" else (uc.item,)
            )
    with pytest.raises(DeclarationError, match="history 'nowhere' is not a declared"):
        dataclasses.replace(uc, history="nowhere")
    by_item = replace_gold(uc.gold[0], "by_item", (uc.item,))
    with pytest.raises(DeclarationError, match=re.escape(f"expected ({uc.user!r},)")):
        dataclasses.replace(uc, gold=(*uc.gold, by_item), history="by_item")
    by_user = replace_gold(uc.gold[0], "by_user", (uc.user,))
    with pytest.raises(DeclarationError, match="item_features 'by_user' is keyed"):
        dataclasses.replace(uc, gold=(*uc.gold, by_user), item_features="by_user")
    if uc.items:  # a history must read the interactions it stands in for
        other = replace_gold(uc.gold[0], "other", (uc.user,), {"x": uc.items})
        with pytest.raises(DeclarationError, match="does not read silver"):
            dataclasses.replace(uc, gold=(*uc.gold, other), history="other")


@pytest.mark.parametrize("name", LABELLED)
def test_use_case_contract(name: str) -> None:
    """What the platform relies on, for every use case a package registers."""
    uc = get_use_case(name)
    assert isinstance(uc, UseCase) and uc.name == name
    uc.params()  # default run options are valid
    silver = {f"silver.{s.name}" for s in uc.silver}
    for spec in uc.silver:
        assert spec.columns, f"{spec.name}: contract declares no column"
        # a PII column is never a feature nor a request column (keys: the id only)
        assert not set(spec.pii) & {*uc.feature_names, *uc.labels.columns}
    for view in uc.views:
        assert set(view.inputs) <= silver
        if isinstance(view, AggregationView):
            assert view.source == uc.labels.table and view.specs
        else:
            assert "silver." in view.query
        assert uc.gold_table(view).startswith(f"gold.{uc.name}_")
    assert uc.labels.table in silver
    assert uc.gates.primary_metric in uc.metrics
    assert uc.model_inputs[0] == uc.labels.id
    assert len(set(uc.feature_names)) == len(uc.feature_names)
    for trainer in uc.trainers:
        assert hasattr(trainer.build(0), "fit")


def test_unknown_use_case_names_the_known_ones() -> None:
    with pytest.raises(
        UseCaseNotFoundError, match=r"'nope' is not registered \(known: .*fraud"
    ):
        get_use_case("nope")


def test_bad_declarations_say_what_is_wrong() -> None:
    with pytest.raises(DeclarationError, match="ttl must be positive"):
        FeatureView("v", "k", (Feature("f"),), "SELECT 1", ("silver.t",), timedelta(0))
    with pytest.raises(DeclarationError, match="not a silver table"):
        FeatureView("v", "k", (Feature("f"),), "SELECT 1", ("gold.t",), timedelta(1))
    with pytest.raises(DeclarationError, match="feature 'Bad Name'"):
        Feature("Bad Name")
    good = cancer_use_case()
    with pytest.raises(
        DeclarationError, match="gate metric 'f1' is not a declared metric"
    ):
        dataclasses.replace(good, gates=Gates(primary_metric="f1"))
    with pytest.raises(
        DeclarationError, match="gate column 'nope' is not a model input"
    ):
        dataclasses.replace(
            good,
            gates=Gates(primary_metric="roc_auc", irrelevant_columns=("nope",)),
        )


def test_rows_without_a_clock_cannot_be_split_or_joined_by_time() -> None:
    good = cancer_use_case()
    clockless = dataclasses.replace(good.labels, timestamp=None)
    with pytest.raises(DeclarationError, match="split kind 'time' needs labels"):
        dataclasses.replace(good, labels=clockless)
    view = good.views[0].name
    with pytest.raises(DeclarationError, match=f"view {view} joins features as of"):
        dataclasses.replace(good, labels=clockless, split=Split(kind="random"))
    assert sensors.labels.timestamp is None  # declared without any clock
    assert sensors.labels.order == ["row_id"]
