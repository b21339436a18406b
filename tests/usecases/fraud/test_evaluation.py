"""The fraud handbook's protocol: known-compromised cards out of the test set, and
card precision@k per day with detected cards removed (hand-computed cases, then
against the handbook's own loops on random data)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from aistack.contract import Evaluation, Split, get_use_case
from aistack.errors import DeclarationError
from aistack.training.metrics import DailyEntityPrecision
from aistack.training.sets import drop_known_positives
from aistack.usecases.fraud.handbook import (
    handbook_card_precision_top_k,
    handbook_test_set,
)

DAY0 = datetime(2018, 7, 25)


def _rows(events: list[tuple[str, int, float, int]]) -> pd.DataFrame:
    """(card, day, hour, fraud) -> rows with an id and a timestamp."""
    return pd.DataFrame(
        {
            "transaction_id": range(len(events)),
            "customer_id": [e[0] for e in events],
            "tx_datetime": [DAY0 + timedelta(days=e[1], hours=e[2]) for e in events],
            "tx_fraud": [e[3] for e in events],
        }
    )


def _protocol(frame, test, names, test_day: int, delay: int) -> pd.DataFrame:
    entity, label, timestamp = names
    return drop_known_positives(
        frame,
        test,
        entity=entity,
        label=label,
        timestamp=timestamp,
        train_start=DAY0,
        test_start=DAY0 + timedelta(days=test_day),
        delay_days=delay,
    )


def test_cards_known_compromised_by_their_test_day_leave_the_test_set() -> None:
    # train days 0-1, delay days 2-3, test days 4-6
    history = [
        ("A", 0, 10, 1),  # fraud in train: out on every test day
        ("B", 2, 10, 1),  # fraud on delay day 2: known from test day 5
        ("C", 3, 23, 1),  # fraud on delay day 3: known from test day 6
        ("D", 5, 1, 1),  # fraud in the test period: never known
        ("E", -1, 10, 1),  # fraud before the train start: not looked at
    ]
    tests = [(card, day, 12, 0) for day in (4, 5, 6) for card in "ABCDE"]
    frame = _rows(history + tests)
    test = frame[frame["tx_datetime"] >= DAY0 + timedelta(days=4)]
    kept = _protocol(frame, test, ("customer_id", "tx_fraud", "tx_datetime"), 4, 2)
    got = sorted(
        (c, (t - DAY0).days)
        for c, t in zip(kept["customer_id"], kept["tx_datetime"], strict=True)
    )
    expected = [("B", 4), ("C", 4), ("C", 5)]
    expected += [(c, d) for c in "DE" for d in (4, 5, 6)] + [("D", 5)]  # its fraud
    assert got == sorted(expected)


def test_card_precision_removes_cards_detected_on_earlier_days() -> None:
    rows = [  # card, day, score, label
        ("A", 0, 0.9, 1),
        ("A", 0, 0.1, 0),
        ("B", 0, 0.8, 0),
        ("C", 0, 0.7, 1),
        ("A", 1, 0.95, 1),  # detected on day 0: left out
        ("C", 1, 0.6, 1),
        ("B", 1, 0.5, 0),
        ("D", 1, 0.4, 1),
        ("C", 2, 0.99, 1),  # detected on day 1: left out
        ("D", 2, 0.9, 1),
        ("E", 2, 0.8, 1),
    ]
    frame = pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "tx_datetime": [DAY0 + timedelta(days=r[1], hours=1) for r in rows],
            "score": [r[2] for r in rows],
            "label": [r[3] for r in rows],
        }
    )
    metric = DailyEntityPrecision("customer_id", "tx_datetime", k=2)
    days = metric.per_day(frame)
    assert days["precision"].tolist() == [0.5, 0.5, 1.0]
    assert days["detected"].tolist() == [1, 1, 2]
    assert days["positives"].tolist() == [2, 2, 2]
    assert metric(frame) == pytest.approx(2 / 3)


def _simulated(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3000
    days = rng.integers(0, 21, n)
    seconds = rng.integers(0, 86400, n)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n),
            "TX_DATETIME": [
                DAY0 + timedelta(days=int(d), seconds=int(s))
                for d, s in zip(days, seconds, strict=True)
            ],
            "CUSTOMER_ID": rng.integers(0, 60, n),
            "TX_TIME_DAYS": days,
            "TX_FRAUD": (rng.random(n) < 0.04).astype(int),
            "predictions": rng.random(n),
        }
    ).sort_values("TX_DATETIME", ignore_index=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_protocol_matches_the_handbook_code_on_random_data(seed: int) -> None:
    tx = _simulated(seed)
    start = pd.Timestamp(DAY0)
    expected = handbook_test_set(tx, start, 7, 7, 7)
    test = tx[tx.TX_DATETIME.ge(start + pd.Timedelta(days=14))]
    ours = _protocol(tx, test, ("CUSTOMER_ID", "TX_FRAUD", "TX_DATETIME"), 14, 7)
    assert sorted(ours["TRANSACTION_ID"]) == sorted(expected["TRANSACTION_ID"])
    assert len(ours) < len(test)  # the protocol removed something
    scored = ours.rename(columns={"predictions": "score", "TX_FRAUD": "label"})
    for k in (5, 20):
        metric = DailyEntityPrecision("CUSTOMER_ID", "TX_DATETIME", k=k)
        assert metric(scored) == pytest.approx(
            handbook_card_precision_top_k(expected, k)
        )


def test_fraud_declares_the_handbook_protocol() -> None:
    uc = get_use_case("fraud")
    assert uc.evaluation.exclude_known_positives == "customer_id"
    assert isinstance(uc.metrics["card_precision_at_100"], DailyEntityPrecision)


def test_known_positive_exclusion_needs_a_day_split_and_a_label_column() -> None:
    uc = get_use_case("fraud")
    with pytest.raises(DeclarationError, match="not among the label columns"):
        dataclasses.replace(uc, evaluation=Evaluation(exclude_known_positives="x"))
    with pytest.raises(DeclarationError, match="time split by days"):
        dataclasses.replace(uc, split=Split(kind="random", fractions=(0.8, 0.2)))
