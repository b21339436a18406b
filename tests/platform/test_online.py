"""Online store: incremental materialization (SQLite, Redis); online/offline parity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aistack.platform.features import build_gold, point_in_time_join
from aistack.platform.inference import load_predictor
from aistack.platform.online import materialize, open_store
from aistack.platform.serving import score_requests
from aistack.platform.training import tracking, with_request_features
from aistack.platform.usecase import get_use_case
from cancer_usecase import cancer_use_case
from servers import redis_server


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield None
    else:
        with redis_server(tmp_path) as (url, _):
            yield url


def latest_transactions(lake, n: int) -> pa.Table:
    """The last transaction of n customers: what the online store holds for them."""
    silver = lake.read("silver.transactions")
    con = lake.connect(lake.versions(["silver.transactions"]))
    return (
        con.sql(
            "SELECT transaction_id, tx_datetime, customer_id, terminal_id, "
            "tx_amount, tx_fraud FROM silver.transactions QUALIFY "
            "row_number() OVER (PARTITION BY customer_id "
            "ORDER BY tx_datetime DESC, transaction_id DESC) = 1 AND "
            "row_number() OVER (PARTITION BY terminal_id "
            "ORDER BY tx_datetime DESC) = 1 "
            f"ORDER BY transaction_id LIMIT {n}"
        ).to_arrow_table()
        if silver.num_rows
        else silver
    )


def test_online_features_equal_offline_ones(fraud_run, store_url, tmp_path) -> None:
    ws, _ = fraud_run
    uc = get_use_case("fraud")
    store = open_store(store_url, tmp_path, uc.name)
    materialize(ws.lake, store, uc)
    sample = latest_transactions(ws.lake, 60)
    assert sample.num_rows >= 20
    offline = with_request_features(
        point_in_time_join(ws.lake, uc, sample, as_of=datetime.now(UTC)), uc
    )
    with _tracking(ws):
        model = mlflow.sklearn.load_model("models:/fraud@champion")
    predictor = load_predictor(
        "fraud", 1, model, sample=np.zeros((4, len(model.features)))
    )
    payloads = [
        {
            k: row[k]
            for k in (
                "transaction_id",
                "customer_id",
                "terminal_id",
                "tx_amount",
                "tx_datetime",
            )
        }
        for row in sample.to_pylist()
    ]
    online = score_requests(uc, store, predictor, payloads)
    for i, scored in enumerate(online):
        assert scored.unknown_entities == []
        for name in uc.feature_names:
            assert scored.features[name] == pytest.approx(
                float(offline[name].iloc[i]), abs=1e-9
            ), name


def _tracking(ws):
    return tracking(ws.settings.mlflow_uri)


def test_materialization_is_incremental(workspace, store_url, tmp_path) -> None:
    uc = cancer_use_case()
    view = uc.views[0]
    lake = workspace.lake
    t0 = datetime(2024, 1, 1)
    rows = {
        "exam_id": [1, 2, 3],
        "patient_id": [1, 2, 3],
        "exam_time": pa.array([t0, t0, t0], pa.timestamp("us")),
        "mean_radius": [1.0, 2.0, 3.0],
        "mean_texture": [1.0] * 3,
        "mean_concavity": [1.0] * 3,
        "worst_area": [1.0] * 3,
        "malignant": [0] * 3,
    }
    lake.write("silver.exams", pa.table(rows), mode="append")
    build_gold(lake, uc, view, written_at=datetime(2026, 1, 1, tzinfo=UTC))
    store = open_store(store_url, tmp_path, uc.name)
    first = materialize(lake, store, uc)[0]
    assert (first.entities, first.skipped) == (3, False)
    assert materialize(lake, store, uc)[0].skipped  # same gold version: nothing read
    later = dict(
        rows,
        exam_id=[4],
        patient_id=[2],
        exam_time=pa.array([t0 + timedelta(hours=1)], pa.timestamp("us")),
        mean_radius=[20.0],
        mean_texture=[1.0],
        mean_concavity=[1.0],
        worst_area=[1.0],
        malignant=[0],
    )
    lake.write("silver.exams", pa.table(later), mode="append")
    build_gold(lake, uc, view, written_at=datetime(2026, 1, 2, tzinfo=UTC))
    second = materialize(lake, store, uc)[0]
    assert (second.entities, second.gold_version) == (1, 1)  # only patient 2 changed
    got = store.get(view.name, [1, 2, 99])
    assert got[0].values[0] == 1.0 and got[1].values[0] == 20.0 and got[2] is None
    assert store.state(view.name).gold_version == 1
    assert (
        pc.max(lake.read(uc.gold_table(view)).column("_written_at")).as_py() is not None
    )
