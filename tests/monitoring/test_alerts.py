"""Alerts fire once per episode and reach a webhook on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from aistack.contract import AlertRule
from aistack.lake.delta import Lake
from aistack.monitoring.alerts import alerts_table, evaluate_alerts, firing

RULES = (
    AlertRule("drifted", "drift_share", 0.3),
    AlertRule("slow", "latency_p99_ms", 50),
)


@pytest.fixture
def receiver():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_fires_once_per_episode(tmp_path, receiver) -> None:
    url, received = receiver
    lake = Lake(tmp_path)

    def check(**observed):
        return evaluate_alerts(
            lake, "fraud", RULES, observed, webhook_url=url, source="t"
        )

    first = check(drift_share=0.5, latency_p99_ms=10)
    assert [(e.rule, e.state, e.delivered) for e in first] == [
        ("drifted", "firing", True)
    ]
    for _ in range(5):  # still breached: same episode, nothing new
        assert check(drift_share=0.6) == []
    assert firing(lake, "fraud") == ["drifted"]
    resolved = check(drift_share=0.1)
    assert [(e.rule, e.state) for e in resolved] == [("drifted", "resolved")]
    again = check(drift_share=0.9, latency_p99_ms=80)
    assert {(e.rule, e.state) for e in again} == {
        ("drifted", "firing"),
        ("slow", "firing"),
    }
    assert [(r["rule"], r["state"]) for r in received] == [
        ("drifted", "firing"),
        ("drifted", "resolved"),
        ("drifted", "firing"),
        ("slow", "firing"),
    ]
    assert received[0]["value"] == 0.5 and received[0]["use_case"] == "fraud"
    assert lake.rows(alerts_table("fraud")) == 4  # one row per transition


def test_an_unreachable_webhook_is_recorded_not_raised(tmp_path) -> None:
    lake = Lake(tmp_path)
    events = evaluate_alerts(
        lake,
        "fraud",
        RULES,
        {"drift_share": 1.0},
        webhook_url="http://127.0.0.1:9/none",
        source="t",
    )
    assert [(e.state, e.delivered) for e in events] == [("firing", False)]
