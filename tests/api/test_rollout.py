"""Shadow and canary under live traffic: bad challengers go, a good one stays.

Every client request must succeed while the server routes to, judges and rolls
back (or promotes) the challenger on its own.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from aistack.registry.rollout import read_rollout, start_rollout
from broken_models import register
from servers import aistack_server

FAST = {"AISTACK_POLL_SECONDS": "0.3", "AISTACK_EVAL_SECONDS": "0.5"}


RECENT: list[dict] = []


@pytest.fixture(autouse=True)
def recent(served_workspace):
    """Stationary traffic: the last 1,200 ingested transactions, resent.

    Their events are already in the online state, so a resent one is a retry
    (counted once): features do not drift while the arms are compared.
    """
    table = served_workspace.lake.read("silver.transactions")
    rows = table.sort_by([("tx_datetime", "descending")]).slice(0, 1200).to_pylist()
    random.Random(0).shuffle(rows)  # any window of traffic is a random sample
    RECENT[:] = [
        {
            "transaction_id": r["transaction_id"],
            "customer_id": r["customer_id"],
            "terminal_id": r["terminal_id"],
            "tx_amount": r["tx_amount"],
            "tx_datetime": r["tx_datetime"].isoformat(),
        }
        for r in rows
    ]


def payload(i: int) -> dict:
    return RECENT[i % len(RECENT)]


def drive(base: str, until, *, seconds: float = 90) -> tuple[list[int], list[str]]:
    """Send requests from 3 clients until `until()` holds; versions and failures."""
    versions: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            i = offset
            while not stop.is_set():
                r = c.post("/v1/fraud/predict", json=payload(i))
                i += 3
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                else:
                    versions.append(r.json()["model_version"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    try:
        while not until() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return versions, failures


@pytest.mark.parametrize(
    ("kind", "mode", "reason"),
    [
        ("raising", "canary", "error rate"),
        pytest.param("slow", "canary", "latency p99", marks=pytest.mark.slow),
        ("shifted", "canary", "score PSI"),
        pytest.param("raising", "shadow", "error rate", marks=pytest.mark.slow),
    ],
)
def test_bad_challenger_is_rolled_back_without_failed_requests(
    served_workspace, kind, mode, reason
) -> None:
    ws = served_workspace
    champion = ws.registry.version_of("fraud", "champion")
    version = register(ws, kind)
    with aistack_server(ws.settings.workspace, env=FAST) as (base, _):
        start_rollout(
            ws.registry, "fraud", mode=mode, share=50, version=version, actor="t"
        )

        def ended() -> bool:
            rollout = read_rollout(ws.registry, "fraud")
            return rollout is not None and not rollout.active

        versions, failures = drive(base, ended)
        rollout = read_rollout(ws.registry, "fraud")
        after = httpx.post(f"{base}/v1/fraud/predict", json=payload(1)).json()
    assert failures == []
    assert rollout is not None and rollout.status == "rolled_back", rollout
    assert reason in rollout.reason
    assert ws.registry.version_of("fraud", "champion") == champion
    assert ws.registry.version_of("fraud", "challenger") is None
    last = ws.registry.history("fraud")[-1]
    assert (last.alias, last.to_version) == ("challenger", None)
    assert reason in last.reason
    assert after["model_version"] == champion
    if kind == "shifted":  # the canary really answered some requests
        assert version in versions


@pytest.mark.slow  # suite budget; promotion logic: tests/registry/test_decisions.py
def test_healthy_canary_is_promoted(served_workspace) -> None:
    ws = served_workspace
    version = register(ws, "same")
    # windows of 2 s: enough requests per arm for a stable score PSI
    env = {**FAST, "AISTACK_EVAL_SECONDS": "2"}
    with aistack_server(ws.settings.workspace, env=env) as (base, _):
        start_rollout(
            ws.registry, "fraud", mode="canary", share=50, version=version, actor="t"
        )
        versions, failures = drive(
            base, lambda: ws.registry.version_of("fraud", "champion") == version
        )
        time.sleep(1.0)  # the next registry poll serves the new champion
        after = httpx.post(f"{base}/v1/fraud/predict", json=payload(999)).json()
    assert failures == []
    rollout = read_rollout(ws.registry, "fraud")
    assert rollout is not None and rollout.status == "promoted"
    assert ws.registry.version_of("fraud", "champion") == version
    assert after["model_version"] == version
    assert version in versions


@pytest.mark.slow  # suite budget (20 min on 2 cores)
def test_a_shadow_backlog_is_dropped_and_counted_never_the_champions_rows(
    served_workspace,
) -> None:
    """A shadow challenger slower than the traffic: its queue stays bounded, the
    excess is dropped and counted, and every champion answer reaches the log."""
    ws = served_workspace
    version = register(ws, "slow")  # 60 ms per call: far slower than the traffic
    env = {**FAST, "AISTACK_SHADOW_QUEUE": "2", "AISTACK_EVAL_SECONDS": "600"}
    answered: list[str] = []
    with aistack_server(ws.settings.workspace, env=env) as (base, _):
        start_rollout(
            ws.registry, "fraud", mode="shadow", share=100, version=version, actor="t"
        )
        time.sleep(1.5)  # a registry poll (every 0.3 s) loads the challenger
        with httpx.Client(base_url=base, timeout=30) as c:
            for i in range(300):
                r = c.post("/v1/fraud/predict", json=payload(i))
                assert r.status_code == 200, r.text
                answered.append(r.json()["request_id"])
            metrics = c.get("/metrics").text
        dropped_line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("aistack_shadow_dropped_total")
        )
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 20  # no backlog drained at shutdown
    assert float(dropped_line.split()[-1]) > 0, dropped_line
    log = ws.lake.read("ops.fraud_prediction_log").to_pylist()
    ours = set(answered)
    champion_rows = {r["request_id"] for r in log if r["route"] == "predict"} & ours
    shadow_rows = [r for r in log if r["route"] == "predict_shadow"]
    assert champion_rows == ours  # not one acknowledged answer lost
    assert 0 < len(shadow_rows) < len(ours)  # shadow scored some, dropped the rest
