"""Fraud's DuckDB feature views give the handbook's pandas values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from aistack.contract import get_use_case
from aistack.features.gold import point_in_time_join
from aistack.training.sets import with_request_features
from aistack.usecases.fraud.handbook import handbook_features

HANDBOOK = {
    "customer_nb_tx_{d}d": "CUSTOMER_ID_NB_TX_{d}DAY_WINDOW",
    "customer_avg_amount_{d}d": "CUSTOMER_ID_AVG_AMOUNT_{d}DAY_WINDOW",
    "terminal_nb_tx_{d}d": "TERMINAL_ID_NB_TX_{d}DAY_WINDOW",
    "terminal_risk_{d}d": "TERMINAL_ID_RISK_{d}DAY_WINDOW",
}


def test_training_features_equal_the_handbook_pandas_code(fraud_run) -> None:
    ws, _ = fraud_run
    uc = get_use_case("fraud")
    silver = ws.lake.read("silver.transactions")
    spine = silver.select(
        [
            "transaction_id",
            "tx_datetime",
            "customer_id",
            "terminal_id",
            "tx_amount",
            "tx_fraud",
        ]
    )
    ours = with_request_features(
        point_in_time_join(ws.lake, uc, spine, as_of=pd.Timestamp.now(tz="UTC")), uc
    ).set_index("transaction_id")
    frame = pl.from_arrow(silver).to_pandas()
    frame.columns = [c.upper() for c in frame.columns]
    theirs = handbook_features(frame).set_index("TRANSACTION_ID").loc[ours.index]
    # Every row, ties included: pandas rolls row by row in (time, id) order, as
    # the platform's per-event windows do.
    keep = frame["TRANSACTION_ID"]
    ties = frame.duplicated(["TERMINAL_ID", "TX_DATETIME"], keep=False)
    assert ties.any(), "the run should hold same-second transactions of a terminal"
    for ours_name, their_name in HANDBOOK.items():
        for d in (1, 7, 30):
            a = ours.loc[keep, ours_name.format(d=d)].to_numpy(dtype=float)
            b = theirs.loc[keep, their_name.format(d=d)].to_numpy(dtype=float)
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=ours_name)
    weekend = pd.to_datetime(frame["TX_DATETIME"]).dt.day_of_week >= 5
    assert (
        ours.loc[frame["TRANSACTION_ID"], "tx_during_weekend"].to_numpy() == weekend
    ).all()
    assert ours["_missing_customer_spending"].sum() == 0
