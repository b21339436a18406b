"""The API under a real uvicorn on 127.0.0.1: answers, errors, auth, swaps, logs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest

from aistack.api.server import port_claim
from aistack.api.state import ServerState, prediction_log_table
from aistack.contract import get_use_case
from aistack.errors import ConfigError
from aistack.features.online import materialize, open_store
from aistack.governance.audit import audit_path, read, verify
from aistack.wal import BACKGROUND_NICE
from conftest import other_version, served_copy
from servers import aistack_server, redis_binary, redis_server

GOOD = {
    "customer_id": 1,
    "terminal_id": 2,
    "tx_amount": 42.5,
    "tx_datetime": "2018-05-30T12:00:00",
}


def test_predict_answers_with_model_features_and_ids(served_workspace) -> None:
    with aistack_server(served_workspace.settings.workspace) as (base, _):
        ready = httpx.get(f"{base}/ready").json()
        assert ready["status"] == "ready" and ready["model"]["name"] == "fraud"
        one = httpx.post(
            f"{base}/v1/fraud/predict", json={**GOOD, "transaction_id": 77}
        )
        assert one.status_code == 200
        body = one.json()
        assert body["request_id"] == "77"
        assert 0.0 <= body["score"] <= 1.0
        assert body["decision"] == (body["score"] >= 0.5)
        champion = served_workspace.registry.version_of("fraud", "champion")
        assert (body["model_name"], body["model_version"]) == ("fraud", champion)
        assert set(body["feature_age_seconds"]) == {
            "customer_spending",
            "terminal_risk",
        }
        unknown = httpx.post(
            f"{base}/v1/fraud/predict", json={**GOOD, "customer_id": 10**9}
        )
        # a first transaction is a known event: its windows hold just itself
        assert unknown.json()["unknown_entities"] == []
        assert unknown.json()["late"] == []
        batch = httpx.post(
            f"{base}/v1/fraud/predict/batch",
            json={"rows": [{**GOOD, "customer_id": i} for i in range(50)]},
        )
        assert batch.status_code == 200
        assert len(batch.json()["predictions"]) == 50
        assert "/v1/fraud/predict" in httpx.get(f"{base}/openapi.json").json()["paths"]


BAD = [
    ({**GOOD, "customer_id": -1}, ["body", "customer_id"]),
    ({**GOOD, "terminal_id": "x"}, ["body", "terminal_id"]),
    ({**GOOD, "tx_amount": "NaN"}, ["body", "tx_amount"]),
    (
        '{"customer_id": 1, "terminal_id": 2, "tx_amount": 1e400, '
        '"tx_datetime": "2018-05-30T12:00:00"}',
        ["body", "tx_amount"],
    ),
    ({**GOOD, "tx_datetime": "yesterday"}, ["body", "tx_datetime"]),
    ({**GOOD, "tx_datetime": 1_527_681_600}, ["body", "tx_datetime"]),  # no epochs
    ({**GOOD, "tx_datetime": "0001-01-01T00:10:05+10:01"}, ["body", "tx_datetime"]),
    ({**GOOD, "customer_id": 2**64}, ["body", "customer_id"]),  # above BIGINT
    ({**GOOD, "transaction_id": 2**63}, ["body", "transaction_id"]),
    ({k: v for k, v in GOOD.items() if k != "customer_id"}, ["body", "customer_id"]),
    ({**GOOD, "surprise": 1}, ["body", "surprise"]),
    ([GOOD], ["body"]),
    ("not json", ["body"]),
]


@pytest.mark.parametrize(("payload", "loc"), BAD)
def test_bad_payloads_get_422_with_the_field(
    served_workspace_server, payload, loc
) -> None:
    base = served_workspace_server
    if isinstance(payload, str):
        r = httpx.post(
            f"{base}/v1/fraud/predict",
            content=payload,
            headers={"content-type": "application/json"},
        )
    else:
        r = httpx.post(f"{base}/v1/fraud/predict", json=payload)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc for e in errors), errors
    assert all(e["msg"] for e in errors)


def test_the_plain_case_fast_path_answers_as_the_route(served_workspace_server) -> None:
    """A plain request (JSON, no query) is answered by `FastPredict`, the same one
    with a query string by the FastAPI route: the same answer (a retry of one
    event id: the same features), the same route in the metrics."""
    base = served_workspace_server
    url = f"{base}/v1/fraud/predict"
    payload = {**GOOD, "transaction_id": 424_242}
    fast = httpx.post(url, json=payload)
    routed = httpx.post(f"{url}?explain=false", json=payload)
    charset = httpx.post(
        url,
        content=json.dumps(payload),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert fast.status_code == routed.status_code == charset.status_code == 200
    assert fast.json() == routed.json() == charset.json()
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.json()["request_id"] == "424242"
    # no content type: the route's own answer (FastAPI reads no JSON body)
    assert httpx.post(url, content=json.dumps(payload)).status_code == 422
    text = httpx.get(f"{base}/metrics").text
    assert 'aistack_requests_total{route="/v1/fraud/predict",status="200"}' in text


def _lookups(base: str) -> float:
    """Scoring calls so far (the feature lookup histogram's count)."""
    text = httpx.get(f"{base}/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("aistack_feature_lookup_seconds_count")
    )
    return float(line.split()[-1])


def test_concurrent_single_rows_are_scored_together_as_one_by_one(
    fraud_run, tmp_path
) -> None:
    """Waves of 24 concurrent single-row requests (distinct entities within a
    wave, so no order inside it matters) get the answers
    that the same requests one by one get from a copy of the same state, and
    log the same features; the concurrent server scored them in fewer calls
    than requests (coalesced)."""
    waves = [
        [
            {
                "transaction_id": 50_000 + 100 * w + k,
                "customer_id": 3 * k + w % 3,
                "terminal_id": 5 * k + w % 5,
                "tx_amount": 10.0 + w + k / 8,
                "tx_datetime": f"2018-06-01T{w // 60:02d}:{w % 60:02d}:{k:02d}",
            }
            for k in range(24)
        ]
        for w in range(12)
    ]
    answers: dict[str, dict] = {}
    served: dict[str, dict] = {}
    for mode in ("together", "one by one"):
        ws = served_copy(fraud_run, tmp_path / mode.replace(" ", "_"))
        with aistack_server(ws.settings.workspace) as (base, _):
            before = _lookups(base)
            with httpx.Client(base_url=base) as client:
                for wave in waves:
                    if mode == "one by one":
                        got = [client.post("/v1/fraud/predict", json=p) for p in wave]
                    else:
                        with ThreadPoolExecutor(len(wave)) as pool:
                            got = list(
                                pool.map(
                                    lambda p: httpx.post(
                                        f"{base}/v1/fraud/predict", json=p
                                    ),
                                    wave,
                                )
                            )
                    for r in got:
                        assert r.status_code == 200, r.text
                        answers.setdefault(mode, {})[r.json()["request_id"]] = r.json()
            calls = _lookups(base) - before
        log = pl.from_arrow(ws.lake.read(prediction_log_table(get_use_case("fraud"))))
        served[mode] = dict(
            zip(log.get_column("request_id"), log.get_column("features"), strict=True)
        )
        requests = sum(len(w) for w in waves)
        if mode == "together":
            assert calls < requests  # some requests were scored together
        else:
            assert calls == requests
    assert answers["together"] == answers["one by one"]
    assert len(served["together"]) == sum(len(w) for w in waves)
    diff = [  # the batch path sums in another order: equal to 1e-12
        (k, f, v, json.loads(served["one by one"][k])[f])
        for k in served["together"]
        for f, v in json.loads(served["together"][k]).items()
        if not math.isclose(v, json.loads(served["one by one"][k])[f], rel_tol=1e-12)
    ]
    assert diff == []  # the logged features


@pytest.mark.slow  # suite budget; the fuzz and 422 tests stay in the default run
def test_batch_over_the_limit_is_422(served_workspace) -> None:
    env = {"AISTACK_MAX_BATCH_ROWS": "10"}
    with aistack_server(served_workspace.settings.workspace, env=env) as (base, _):
        r = httpx.post(f"{base}/v1/fraud/predict/batch", json={"rows": [GOOD] * 11})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "rows"]
        assert (
            httpx.post(f"{base}/v1/fraud/predict/batch", json={"rows": []}).status_code
            == 422
        )


def test_tokens_guard_predictions_not_health(served_workspace) -> None:
    env = {"AISTACK_API_TOKENS": '["s3cret", "other"]'}
    with aistack_server(served_workspace.settings.workspace, env=env) as (base, _):
        url = f"{base}/v1/fraud/predict"
        assert httpx.post(url, json=GOOD).status_code == 401
        wrong = httpx.post(url, json=GOOD, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        ok = httpx.post(url, json=GOOD, headers={"Authorization": "Bearer other"})
        assert ok.status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/ready").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 401
        text = httpx.get(
            f"{base}/metrics", headers={"Authorization": "Bearer s3cret"}
        ).text
        assert "aistack_auth_failures_total 3.0" in text


def test_metrics_cover_requests_scores_lookups_and_model(served_workspace) -> None:
    with aistack_server(served_workspace.settings.workspace) as (base, _):
        with httpx.Client(base_url=base) as client:
            for i in range(150):  # enough for the in-server PSI (100 rows minimum)
                client.post("/v1/fraud/predict", json={**GOOD, "customer_id": i})
            client.post("/v1/fraud/predict", json={})
        time.sleep(1.0)  # one evaluation interval publishes the drift gauges
        text = httpx.get(f"{base}/metrics").text
    assert 'aistack_feature_psi{feature="tx_amount"}' in text
    assert 'aistack_feature_psi{feature="score"}' in text
    assert 'aistack_requests_total{route="/v1/fraud/predict",status="200"}' in text
    assert 'aistack_requests_total{route="/v1/fraud/predict",status="422"} 1.0' in text
    assert (
        'aistack_request_latency_seconds_bucket{le="0.01",route="/v1/fraud/predict"'
        in text
    )
    assert "aistack_score_count" in text
    assert "aistack_feature_lookup_seconds_count" in text
    assert 'aistack_online_feature_age_seconds_count{view="terminal_risk"}' in text
    assert 'aistack_model_info{batch_path="' in text


@pytest.mark.slow  # suite budget (20 min on 2 cores)
def test_champion_swap_under_load_drops_nothing(served_workspace) -> None:
    ws = served_workspace
    registry = ws.registry
    old = registry.version_of("fraud", "champion")
    other = other_version(registry, "fraud", old)
    seen: list[list[int]] = [[] for _ in range(3)]  # per client, in its own order
    failures: list[str] = []
    stop = threading.Event()
    with aistack_server(ws.settings.workspace) as (base, _):

        def stream(versions: list[int]) -> None:
            with httpx.Client(base_url=base) as client:
                k = 0
                while not stop.is_set():
                    k += 1  # traffic spread over cards and terminals, as in life
                    row = {**GOOD, "customer_id": k % 400, "terminal_id": k % 800}
                    r = client.post("/v1/fraud/predict", json=row)
                    time.sleep(0.005)  # steady load that leaves the poller its turn
                    if r.status_code != 200:
                        failures.append(r.text)
                    else:
                        versions.append(r.json()["model_version"])

        threads = [threading.Thread(target=stream, args=(v,)) for v in seen]
        for t in threads:
            t.start()
        time.sleep(1.0)
        registry.move("fraud", "champion", other, actor="test", reason="swap test")
        deadline = time.monotonic() + 90  # loading a model under load, on 2 cores
        while time.monotonic() < deadline and not all(
            v and v[-1] == other for v in seen
        ):
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    for versions in seen:
        # Each client's requests are sequential: once one was answered by the new
        # champion, every later one is too (requests in flight during the swap
        # on other connections may finish with the old model; that is not a flap).
        assert versions[0] == old and versions[-1] == other
        switched = versions.index(other)
        assert all(v == other for v in versions[switched:])


def test_sigterm_flushes_every_logged_prediction(served_workspace) -> None:
    ws = served_workspace
    env = {"AISTACK_LOG_FLUSH_SECONDS": "3600"}  # only the shutdown flush can write
    n = 120
    with aistack_server(ws.settings.workspace, env=env) as (base, proc):
        with httpx.Client(base_url=base) as client:
            for i in range(n // 2):
                assert client.post(
                    "/v1/fraud/predict", json={**GOOD, "transaction_id": i}
                ).is_success
            rows = [{**GOOD, "transaction_id": 1000 + i} for i in range(n // 2)]
            assert client.post(
                "/v1/fraud/predict/batch", json={"rows": rows}
            ).is_success
        port = base.rsplit(":", 1)[1]
        lock = Path(tempfile.gettempdir()) / f"aistack-serve-127.0.0.1-{port}.lock"
        assert lock.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # a graceful stop, its port released
        assert not lock.exists()
    table = prediction_log_table(get_use_case("fraud"))
    log = pl.from_arrow(ws.lake.read(table))
    assert log.height == n
    assert set(log.get_column("route").to_list()) == {"predict", "predict_batch"}
    assert log.get_column("request_id").n_unique() == n
    assert (
        log.get_column("online_versions")[0]
        == '{"customer_spending":0,"terminal_risk":0}'
    )


@pytest.fixture(scope="module")
def served_workspace_server(fraud_run, tmp_path_factory):
    """One server for the module's read-only checks (a server start is seconds)."""
    ws = served_copy(fraud_run, tmp_path_factory.mktemp("api") / "served")
    with aistack_server(ws.settings.workspace) as (base, _):
        yield base


def test_scoring_threads_are_one_on_sqlite_and_four_on_redis(
    served_workspace, tmp_path
) -> None:
    """What the README says of the scoring threads, on the real stores."""
    uc = get_use_case("fraud")
    settings = served_workspace.settings
    assert ServerState(uc, settings).scoring_threads == 1
    with redis_server(tmp_path) as (url, _):
        remote = settings.model_copy(update={"online_url": url})
        assert ServerState(uc, remote).scoring_threads == 4


def test_redis_store_serves_and_ready_flips_when_it_goes_down(
    served_workspace, tmp_path
) -> None:
    ws = served_workspace
    uc = get_use_case("fraud")
    with redis_server(tmp_path) as (url, redis_proc):
        materialize(ws.lake, open_store(url, tmp_path, uc.name), uc)
        env = {"AISTACK_ONLINE_URL": url}
        with aistack_server(ws.settings.workspace, env=env) as (base, _):
            assert httpx.get(f"{base}/ready").status_code == 200
            r = httpx.post(f"{base}/v1/fraud/predict", json=GOOD)
            assert r.status_code == 200 and r.json()["unknown_entities"] == []
            redis_proc.terminate()
            redis_proc.wait()
            down = httpx.get(f"{base}/ready")
            assert down.status_code == 503
            assert down.json()["online_store"] == "unreachable"
            assert httpx.post(f"{base}/v1/fraud/predict", json=GOOD).status_code == 503
            port = url.rsplit(":", 1)[1].split("/")[0]
            again = subprocess.Popen(
                [redis_binary(), "--port", port, "--bind", "127.0.0.1", "--save", ""],
                stdout=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 10
                while httpx.get(f"{base}/ready").status_code != 200:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            finally:
                again.terminate()
                again.wait()


def test_two_workers_serve_share_metrics_and_flush_on_sigterm(
    served_workspace, tmp_path
) -> None:
    """The workers hand their log segments off; the supervisor commits them,
    while serving and at SIGTERM, each row once."""
    ws = served_workspace
    token = 'to"ken\\'  # quotes and backslashes reach the workers intact
    env = {
        "AISTACK_LOG_FLUSH_SECONDS": "1",
        "AISTACK_API_TOKENS": json.dumps([token]),
        "TMPDIR": str(tmp_path),  # where the workers' metrics folder is made
    }
    auth = {"Authorization": f"Bearer {token}"}
    with aistack_server(ws.settings.workspace, env=env, args=("--workers", "2")) as (
        base,
        proc,
    ):
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for i in range(60):  # new connection each: the kernel spreads them
            r = httpx.post(
                f"{base}/v1/fraud/predict",
                json={**GOOD, "transaction_id": i},
                headers=auth,
            )
            assert r.status_code == 200
        refused = httpx.post(f"{base}/v1/fraud/predict", json=GOOD)
        assert refused.status_code == 401
        text = httpx.get(f"{base}/metrics", headers=auth).text
        assert (
            'aistack_requests_total{route="/v1/fraud/predict",status="200"} 60.0'
            in text
        )
        assert len(list(tmp_path.glob("aistack-prom-*"))) == 1
        # the parent's committing threads (log flusher, audit drainer) run niced
        niced = [
            t.id
            for t in psutil.Process(proc.pid).threads()
            if os.getpriority(os.PRIO_PROCESS, t.id) == BACKGROUND_NICE
        ]
        assert len(niced) >= 2
        table = prediction_log_table(get_use_case("fraud"))
        deadline = time.monotonic() + 60  # committed while serving
        while not ws.lake.exists(table) or ws.lake.rows(table) < 60:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        for i in range(60, 70):  # sent just before the stop
            r = httpx.post(
                f"{base}/v1/fraud/predict",
                json={**GOOD, "transaction_id": i},
                headers=auth,
            )
            assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    log = pl.from_arrow(ws.lake.read(table))
    assert log.height == 70 and log.get_column("request_id").n_unique() == 70
    assert not [p for p in (ws.settings.workspace / "wal").rglob("*") if p.is_file()]
    # the audit records too: handed off by the workers, chained by the parent
    audited = [r for r in read(audit_path(ws)) if r["action"] == "predict"]
    assert sorted(r["details"]["request_id"] for r in audited) == sorted(
        log.get_column("request_id").to_list()
    )
    assert verify(audit_path(ws)).broken is None
    assert not list((audit_path(ws).parent / "wal").iterdir())
    assert not list(tmp_path.glob("aistack-prom-*"))  # removed when serving stopped


@pytest.mark.slow  # suite budget (20 min on 2 cores)
def test_health_answers_while_a_big_batch_is_scored(served_workspace) -> None:
    rows = [
        {
            **GOOD,
            "customer_id": i % 400,
            "terminal_id": i % 800,
            "transaction_id": 10**8 + i,
        }
        for i in range(10_000)
    ]
    with aistack_server(served_workspace.settings.workspace) as (base, _):
        done = threading.Event()
        answers: list[int] = []

        def big_batch() -> None:
            answers.append(
                httpx.post(
                    f"{base}/v1/fraud/predict/batch", json={"rows": rows}, timeout=120
                ).status_code
            )
            done.set()

        thread = threading.Thread(target=big_batch)
        thread.start()
        healthy_during = 0
        while not done.is_set():
            if (
                httpx.get(f"{base}/health", timeout=5).status_code == 200
                and not done.is_set()
            ):
                healthy_during += 1
        thread.join()
        assert answers == [200]
        assert healthy_during >= 5  # the event loop was free while the batch scored


@pytest.mark.slow  # two servers; the port-held-by-a-program test stays default
def test_a_second_serve_on_a_port_in_use_is_refused(served_workspace) -> None:
    workspace = served_workspace.settings.workspace
    # the first with SO_REUSEPORT workers, which a second would silently share
    with aistack_server(workspace, args=("--workers", "2")) as (base, proc):
        port = base.rsplit(":", 1)[1]
        command = ["serve", "fraud", "--port", port, "-w", str(workspace)]
        second = subprocess.run(
            [sys.executable, "-m", "aistack", *command],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert f"port {port} on 127.0.0.1 is in use by pid {proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        assert httpx.get(f"{base}/health").status_code == 200
        lock = Path(tempfile.gettempdir()) / f"aistack-serve-127.0.0.1-{port}.lock"
        assert lock.exists()
    assert not lock.exists()  # a stopped server leaves no lock file behind


def _workers(parent: psutil.Process) -> set[int]:
    """The pids of a serve's live worker processes (not multiprocessing's tracker)."""
    pids = set()
    for child in parent.children():
        try:
            if "--multiprocessing-fork" in child.cmdline():
                pids.add(child.pid)
        except psutil.Error:  # a killed worker not yet reaped (zombie)
            pass
    return pids


@pytest.mark.slow  # two worker starts and a restart: suite budget
def test_a_killed_worker_is_restarted(served_workspace) -> None:
    workspace = served_workspace.settings.workspace
    with aistack_server(workspace, args=("--workers", "2")) as (base, proc):
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120  # both listening, not only the first
        while len(before := _workers(parent)) < 2 or not all(
            psutil.Process(pid).net_connections() for pid in before
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):  # its socket closes at exit
            while psutil.Process(victim).status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.01)
        deadline = time.monotonic() + 20
        while (now := _workers(parent)) == before - {victim} or len(now) < 2:
            assert time.monotonic() < deadline, f"no new worker: {now}"
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
            time.sleep(0.1)
        assert victim not in now and len(now - before) == 1
        (new,) = now - before
        deadline = time.monotonic() + 120  # a spawned worker re-imports: slow when busy
        while not psutil.Process(new).net_connections():
            assert time.monotonic() < deadline, "the new worker never listened"
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
            time.sleep(0.2)
        for _ in range(20):  # both workers listen: fresh connections reach both
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        assert proc.poll() is None


def test_a_port_held_by_another_program_is_refused_naming_it() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()} "):  # noqa: SIM117
            with port_claim("127.0.0.1", port):
                pass
