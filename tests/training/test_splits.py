"""Declared splits: deterministic for a seed, proportions as declared, rounding as
RecBole's `_calcu_split_ids` (floor per part, the rest to the last)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from aistack.contract import Split
from aistack.errors import DeclarationError
from aistack.training.sets import assign_parts
from cancer_usecase import cancer_use_case


def _frame(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "exam_id": np.arange(n),
            "malignant": (rng.random(n) < 0.1).astype(int),
            "patient_id": rng.integers(0, 37, n),
        }
    )


def _with(split: Split):
    return dataclasses.replace(cancer_use_case(), split=split)


def test_random_split_is_deterministic_for_a_seed_and_cuts_by_fractions() -> None:
    frame = _frame()
    uc = _with(Split(kind="random", fractions=(0.8, 0.1, 0.1)))
    parts = assign_parts(frame, uc, seed=1)
    assert np.bincount(parts).tolist() == [800, 100, 100]
    assert (assign_parts(frame, uc, seed=1) == parts).all()
    assert not (assign_parts(frame, uc, seed=2) == parts).all()
    pinned = _with(Split(kind="random", fractions=(0.8, 0.1, 0.1), seed=5))
    assert (
        assign_parts(frame, pinned, seed=1) == assign_parts(frame, pinned, seed=9)
    ).all()


def test_stratified_split_keeps_the_label_share_in_every_part() -> None:
    frame = _frame()
    parts = assign_parts(
        frame, _with(Split(kind="stratified", fractions=(0.7, 0.3))), seed=3
    )
    positives = frame["malignant"].to_numpy()
    n_pos = int(positives.sum())
    assert int(positives[parts == 1].sum()) == n_pos - int(0.7 * n_pos)


def test_group_split_cuts_within_each_group_like_recbole() -> None:
    frame = _frame()
    uc = _with(Split(kind="group", group="patient_id", fractions=(0.8, 0.1, 0.1)))
    parts = assign_parts(frame, uc, seed=0)
    for _, rows in frame.assign(part=parts).groupby("patient_id"):
        n = len(rows)
        counts = np.bincount(rows["part"], minlength=3).tolist()
        assert counts == [int(0.8 * n), int(0.1 * n), n - int(0.8 * n) - int(0.1 * n)]


def test_time_fractions_cut_rows_in_order() -> None:
    parts = assign_parts(_frame(10), _with(Split(fractions=(0.6, 0.4))), seed=0)
    assert parts.tolist() == [0] * 6 + [1] * 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.5, 0.4)}, "summing to 1"),
        ({"kind": "group"}, "needs the group column"),
        ({"kind": "random", "group": "x"}, "only read by kind 'group'"),
        ({"kind": "shuffle"}, "unknown kind"),
    ],
)
def test_a_bad_split_is_refused_with_the_reason(kwargs, message) -> None:
    with pytest.raises(DeclarationError, match=message):
        Split(**kwargs)
