"""Prometheus rules and the Grafana dashboard, against a real Prometheus that
scrapes a running `aistack serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from servers import aistack_server, free_port

DEPLOY = Path(__file__).parents[2] / "deploy" / "monitoring"
RULES = DEPLOY / "alerts.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return found


def test_alert_rules_pass_promtool() -> None:
    checked = subprocess.run(
        [binary("promtool"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout


def promtool_test(tmp_path: Path, series: list[dict], alerts: list[dict]) -> None:
    """promtool's rule tester on the rules: `series` sampled every minute,
    `alerts` its expected alerts at given times."""
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": series, "alert_rule_test": alerts}
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    checked = subprocess.run(
        [binary("promtool"), "test", "rules", str(tmp_path / "tests.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_mismatch_alert_fires_on_a_mismatch_rate_above_one_percent(
    tmp_path,
) -> None:
    """promtool's rule tester: 5% of served values of feature `a` differ from
    their offline definition for 20 minutes; `v` stays at 0 (consistent)."""
    series = "aistack_online_offline_mismatch_rate"
    promtool_test(
        tmp_path,
        [
            {
                "series": f'{series}{{job="aistack-api",feature="a"}}',
                "values": "0.05x30",
            },
            {
                "series": f'{series}{{job="aistack-api",feature="v"}}',
                "values": "0x30",
            },
        ],
        [
            {"eval_time": "10m", "alertname": "AIStackOnlineOfflineMismatch"},
            {
                "eval_time": "20m",
                "alertname": "AIStackOnlineOfflineMismatch",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "page",
                            "job": "aistack-api",
                            "feature": "a",
                        },
                        "exp_annotations": {
                            "summary": "aistack-api: 5% of served a values "
                            "differ from their offline definition"
                        },
                    }
                ],
            },
        ],
    )


def test_the_partition_alert_fires_on_a_consumer_waiting_most_of_the_time(
    tmp_path,
) -> None:
    """promtool's rule tester: consumer `a` waits 45 s a minute for another
    partition for 20 minutes; consumer `b` waits 6 s a minute."""
    series = "aistack_stream_partition_wait_seconds_total"
    promtool_test(
        tmp_path,
        [
            {
                "series": f'{series}{{job="aistack-stream",instance="a"}}',
                "values": "0+45x30",
            },
            {
                "series": f'{series}{{job="aistack-stream",instance="b"}}',
                "values": "0+6x30",
            },
        ],
        [
            {"eval_time": "5m", "alertname": "AIStackPartitionStalled"},
            {
                "eval_time": "20m",
                "alertname": "AIStackPartitionStalled",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warn",
                            "job": "aistack-stream",
                            "instance": "a",
                        },
                        "exp_annotations": {
                            "summary": "a: waiting for another stream "
                            "partition 75% of the time"
                        },
                    }
                ],
            },
        ],
    )


@contextmanager
def prometheus(tmp: Path, target: str, rules: Path) -> Iterator[str]:
    """Prometheus scraping `target` (job aistack-api) and evaluating `rules`,
    both every second; yields its URL once ready."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "aistack-api", "static_configs": [{"targets": [target]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: httpx.get(f"{url}/-/ready").status_code == 200, "ready", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait(condition, what: str, proc=None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, f"not {what} after {seconds} s"
        time.sleep(0.5)


def firing(url: str) -> set[str]:
    alerts = httpx.get(f"{url}/api/v1/alerts").json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def test_prometheus_scrapes_serve_and_an_alert_fires_on_errors(tmp_path) -> None:
    # the same expressions without their hold times (`for`), so a failing
    # evaluation fires at once instead of minutes later
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    instant = tmp_path / "alerts.yml"
    instant.write_text(yaml.safe_dump(rules))
    # an empty workspace: no champion, so every scoring request is a 503
    with aistack_server(tmp_path / "ws") as (base, _):
        target = base.removeprefix("http://")
        with prometheus(tmp_path, target, instant) as prom:

            def up() -> bool:
                query = {"query": 'up{job="aistack-api"}'}
                result = httpx.get(f"{prom}/api/v1/query", params=query).json()
                values = result["data"]["result"]
                return bool(values) and values[0]["value"][1] == "1"

            wait(up, "scraping aistack serve")
            wait(lambda: "AIStackNoModel" in firing(prom), "firing AIStackNoModel")
            assert "AIStackHighErrorRate" not in firing(prom)
            row = {
                "customer_id": 1,
                "terminal_id": 2,
                "tx_amount": 1.0,
                "tx_datetime": "2018-05-01T00:00:00",
            }

            def errors_fire() -> bool:
                for _ in range(5):
                    answer = httpx.post(f"{base}/v1/fraud/predict", json=row)
                    assert answer.status_code == 503
                return "AIStackHighErrorRate" in firing(prom)

            wait(errors_fire, "firing AIStackHighErrorRate")
            for panel in json.loads(DASHBOARD.read_text())["panels"]:
                for target_ in panel["targets"]:
                    query = {"query": target_["expr"]}
                    answer = httpx.get(f"{prom}/api/v1/query", params=query).json()
                    assert answer["status"] == "success", (panel["title"], answer)
