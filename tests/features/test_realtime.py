"""Real-time features: served values equal their offline definition, provably.

Replays the last days of a small simulation through the real server (uvicorn on
127.0.0.1) after bootstrapping the state as of an earlier time, with labels
posted as they become known, then runs the consistency check over the Delta
prediction log: every feature must match (relative tolerance 1e-9).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import mlflow
import numpy as np
import pyarrow.compute as pc
import pytest

from aistack.contract import get_use_case
from aistack.features.gold import build_gold
from aistack.features.online import open_store
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.lake.delta import Lake
from aistack.monitoring.consistency import check_consistency
from aistack.serving.inference import load_predictor
from aistack.serving.requests import score_requests
from aistack.training.tracking import tracking
from servers import aistack_server, redis_server

REPLAY_DAYS = 9  # longer than the 7-day label delay: replayed labels count too
FIELDS = ("transaction_id", "customer_id", "terminal_id", "tx_amount")


@pytest.fixture(  # the Redis state's replay with -m slow (same code above the store)
    params=["sqlite", pytest.param("redis", marks=pytest.mark.slow)]
)
def online_url(request, tmp_path):
    if request.param == "sqlite":
        yield None
    else:
        with redis_server(tmp_path) as (url, _):
            yield url


def silver_events(lake: Lake, start: datetime) -> list[dict]:
    table = lake.read("silver.transactions")
    table = table.filter(pc.field("tx_datetime") >= start)
    rows = table.sort_by(
        [("tx_datetime", "ascending"), ("transaction_id", "ascending")]
    )
    return rows.to_pylist()


def payload(row: dict) -> dict:
    return {
        **{k: row[k] for k in FIELDS},
        "tx_datetime": row["tx_datetime"].isoformat(),
    }


def post_in_time_order(client, replay, pending, delay) -> tuple[int, int]:
    """POST events in time order (single rows and batches of 40), each chunk
    preceded by the labels known by its last event; (labels applied, late)."""
    applied = late = i = step = 0
    while i < len(replay):
        size = 1 if step % 4 == 0 else 40
        chunk = replay[i : i + size]
        # labels known by the chunk's last event (one known later than an
        # earlier row's time falls outside that row's shifted window anyway)
        now = chunk[-1]["tx_datetime"]
        known = [r for r in pending if r["tx_datetime"] + delay <= now]
        if known:
            pending = [r for r in pending if r["tx_datetime"] + delay > now]
            body = [
                {"event_id": r["transaction_id"], "label": r["tx_fraud"]} for r in known
            ]
            answer = client.post("/v1/fraud/labels", json={"labels": body})
            assert answer.status_code == 200, answer.text
            applied += answer.json()["applied"]
        if size == 1:
            got = client.post("/v1/fraud/predict", json=payload(chunk[0]))
            assert got.status_code == 200, got.text
            late += bool(got.json()["late"])
        else:
            rows = [payload(r) for r in chunk]
            got = client.post("/v1/fraud/predict/batch", json={"rows": rows})
            assert got.status_code == 200, got.text
            late += sum(bool(p["late"]) for p in got.json()["predictions"])
        i += size
        step += 1
    return applied, late


def test_replay_through_the_server_is_consistent(served_workspace, online_url) -> None:
    ws = served_workspace
    uc = get_use_case("fraud")
    last = pc.max(ws.lake.read("silver.transactions").column("tx_datetime")).as_py()
    as_of = datetime.combine(last.date(), datetime.min.time()) - timedelta(
        days=REPLAY_DAYS - 1
    )
    events = open_event_state(online_url, ws.settings.workspace, uc.name)
    for view in uc.aggregation_views:
        bootstrap(ws.lake, events, uc, view, as_of=as_of)
    replay = silver_events(ws.lake, as_of + timedelta(microseconds=1))
    assert len(replay) > 1000
    delay = uc.labels.delay
    pending = [
        r for r in silver_events(ws.lake, as_of - delay) if r["tx_datetime"] <= as_of
    ]
    pending += replay  # labels of these become known during the replay
    env = {"AISTACK_ONLINE_URL": online_url} if online_url else {}
    env |= {"AISTACK_LOG_FLUSH_SECONDS": "0.5", "AISTACK_CONSISTENCY_SECONDS": "1"}
    with (
        aistack_server(ws.settings.workspace, env=env) as (base, _),
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        applied, late = post_in_time_order(client, replay, pending, delay)
        # the server's own check: every served value equals its offline value
        deadline = time.monotonic() + 60
        while f"aistack_online_offline_compared {len(replay)}.0" not in (
            text := client.get("/metrics").text
        ):
            assert time.monotonic() < deadline, "no consistency check published"
            time.sleep(0.5)
    rates = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aistack_online_offline_mismatch_rate{")
    ]
    assert len(rates) == len(uc.feature_names) and max(rates) == 0.0
    assert applied > 0 and late == 0
    report = check_consistency(ws.lake, uc)
    assert report.compared == len(replay)
    table = report.frame()
    assert set(table["feature"]) == set(uc.feature_names)
    assert (table["compared"] == len(replay)).all()
    assert table["mismatch_rate"].max() == 0.0, table.to_string()
    assert table["missing_rate"].max() == 0.0, table.to_string()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "aistack",
            "consistency",
            "fraud",
            "-w",
            str(ws.settings.workspace),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert cli.returncode == 0, cli.stderr
    assert f"{len(replay):,} of {len(replay):,} logged predictions" in cli.stdout
    assert "terminal_risk_30d" in cli.stdout and "0.0000%" in cli.stdout
    # the windows were not trivially empty: risk saw frauds, counts varied
    log = ws.lake.read("ops.fraud_prediction_log").to_pandas()
    assert log["feature_terminal_risk_7d"].max() > 0
    assert log["feature_customer_nb_tx_1d"].nunique() > 2


def _predictor(ws):
    with tracking(ws.settings.mlflow_uri):
        model = mlflow.sklearn.load_model("models:/fraud@champion")
    return load_predictor("fraud", 1, model, sample=np.zeros((4, len(model.features))))


def test_retries_count_once_late_events_are_flagged_and_state_stays_bounded(
    served_workspace,
) -> None:
    ws = served_workspace
    uc = get_use_case("fraud")
    events = open_event_state(None, ws.settings.workspace, uc.name)
    store = open_store(None, ws.settings.workspace, uc.name)
    predictor = _predictor(ws)
    t0 = datetime(2030, 1, 1)
    customer = 10**6  # unknown so far: only these events count

    def send(i: int, t: datetime):
        row = {
            "transaction_id": 10**9 + i,
            "customer_id": customer,
            "terminal_id": 10**6,
            "tx_amount": 10.0 + i,
            "tx_datetime": t,
        }
        return score_requests(uc, store, predictor, [row], events=events)[0]

    first = send(0, t0)
    again = send(0, t0)  # a retry: same id
    assert first.features == again.features
    assert again.features["customer_nb_tx_1d"] == 1.0
    assert events.size("customer_spending", str(customer)) == 1
    lateness = uc.views[0].allowed_lateness
    assert lateness == timedelta(days=1)
    send(1, t0 + timedelta(hours=6))
    within = send(2, t0 + timedelta(hours=3))  # late, but within the allowed day
    assert within.late == []
    assert within.features["customer_nb_tx_1d"] == 2.0  # 0 and itself, not 1
    send(3, t0 + timedelta(days=3))
    late = send(4, t0 + timedelta(days=1, hours=12))  # 1.5 days behind event 3
    assert late.late == ["customer_spending", "terminal_risk"]
    # counted from the events before it only: 1, 2 and itself, not event 3
    assert late.features["customer_nb_tx_7d"] == 4.0
    assert late.features["customer_avg_amount_1d"] == pytest.approx(14.0)
    for i in range(5, 5 + 4 * 50):  # 50 days, one event every 6 hours
        send(i, t0 + timedelta(hours=6 * i))
    view = uc.views[0]
    bound = view.retention / timedelta(hours=6) + 1
    assert events.size("customer_spending", str(customer)) <= bound
    assert (
        events.size("terminal_risk", str(10**6))
        <= uc.views[1].retention / timedelta(hours=6) + 1
    )


def test_gold_increment_writes_only_the_new_events(fraud_run, tmp_path) -> None:
    source, _ = fraud_run
    uc = get_use_case("fraud")
    silver = source.lake.read("silver.transactions")
    last = pc.max(silver.column("tx_datetime")).as_py()
    cut = datetime.combine(last.date(), datetime.min.time())
    old = silver.filter(pc.field("tx_datetime") < cut)
    new = silver.filter(pc.field("tx_datetime") >= cut)
    lake = Lake(tmp_path / "tables")
    lake.write("silver.transactions", old, mode="append")
    view = uc.views[0]
    first = build_gold(lake, uc, view, written_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert first.new_rows == old.num_rows
    lake.write("silver.transactions", new, mode="append")
    second = build_gold(lake, uc, view, written_at=datetime(2026, 1, 2, tzinfo=UTC))
    assert second.new_rows == new.num_rows > 0
    again = build_gold(lake, uc, view, written_at=datetime(2026, 1, 3, tzinfo=UTC))
    assert again.skipped
    ours = lake.read(uc.gold_table(view)).to_pandas().set_index("transaction_id")
    full = source.lake.read(uc.gold_table(view)).to_pandas().set_index("transaction_id")
    assert len(ours) == len(full) and ours.index.is_unique
    for name in view.feature_names:
        np.testing.assert_allclose(
            ours.loc[full.index, name], full[name], rtol=1e-9, err_msg=name
        )
