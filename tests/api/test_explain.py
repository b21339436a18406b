"""?explain=true under a real uvicorn: explanations add up to the served score."""

from __future__ import annotations

import math
import time

import httpx

from aistack.contract import get_use_case
from servers import aistack_server

GOOD = {
    "customer_id": 1,
    "terminal_id": 2,
    "tx_amount": 42.5,
    "tx_datetime": "2018-05-30T12:00:00",
}


def check_adds_up(body: dict, features: set[str]) -> None:
    explanation = body["explanation"]
    listed = explanation["contributions"]
    assert 0 < len(listed) <= 5
    assert {c["feature"] for c in listed} <= features
    sizes = [abs(c["contribution"]) for c in listed]
    assert sizes == sorted(sizes, reverse=True)
    total = (
        explanation["base_value"]
        + sum(c["contribution"] for c in listed)
        + explanation["rest"]
    )
    assert abs(total - explanation["margin"]) < 1e-9
    # the served score may come from the float32 ONNX path: compare probabilities
    assert abs(1 / (1 + math.exp(-total)) - body["score"]) < 1e-6


def test_explain_true_adds_explanations_that_sum_to_the_margin(
    fraud_run, served_workspace
) -> None:
    _, report = fraud_run
    ws = served_workspace
    registry = ws.registry
    xgb = next(c for c in report.candidates if c.trainer == "xgboost")
    forest = next(c for c in report.candidates if c.trainer == "isolation_forest")
    registry.move("fraud", "champion", xgb.version, actor="test", reason="explain")
    with aistack_server(ws.settings.workspace) as (base, _):
        features = set(get_use_case("fraud").feature_names)
        plain = httpx.post(f"{base}/v1/fraud/predict", json=GOOD)
        assert plain.status_code == 200 and "explanation" not in plain.json()
        one = httpx.post(f"{base}/v1/fraud/predict?explain=true", json=GOOD)
        assert one.status_code == 200, one.text
        check_adds_up(one.json(), features)
        rows = [{**GOOD, "customer_id": i, "tx_amount": 10.0 * i} for i in range(20)]
        batch = httpx.post(
            f"{base}/v1/fraud/predict/batch?explain=true", json={"rows": rows}
        )
        assert batch.status_code == 200, batch.text
        for body in batch.json()["predictions"]:
            check_adds_up(body, features)
        plain_batch = httpx.post(f"{base}/v1/fraud/predict/batch", json={"rows": rows})
        assert all("explanation" not in p for p in plain_batch.json()["predictions"])

        registry.move("fraud", "champion", forest.version, actor="test", reason="x")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = httpx.get(f"{base}/ready").json()
            if ready["model"]["version"] == forest.version:
                break
            time.sleep(0.2)
        refused = httpx.post(f"{base}/v1/fraud/predict?explain=true", json=GOOD)
        assert refused.status_code == 422
        assert "cannot explain model IsolationForest" in refused.json()["detail"]
        assert httpx.post(f"{base}/v1/fraud/predict", json=GOOD).status_code == 200
