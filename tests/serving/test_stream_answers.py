"""The stream consumer publishes each task's own answer, as the HTTP route does:
class + probabilities, value + interval, score + anomaly flag (a real Redis, a
real `aistack stream` process, use cases registered as a plugin package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from aistack.contract import UseCase
from aistack.runner import run
from aistack.serving.stream import stream_names
from conftest import make_workspace
from servers import redis_server
from task_usecases import diabetes, sensors, wine
from test_tasks import _rows, plugin_site

EVENTS = 20
STREAM = (sys.executable, "-m", "aistack", "stream")


SLOW = pytest.mark.slow  # suite budget: regression (value + interval) stays default


@pytest.mark.parametrize(
    "uc",
    [pytest.param(wine, marks=SLOW), diabetes, pytest.param(sensors, marks=SLOW)],
    ids=lambda u: u.name,
)
def test_stream_publishes_the_tasks_answer(uc: UseCase, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    assert run(uc, ws, uc.params()).champion is not None
    env = plugin_site(tmp_path / "site", {uc.name: f"task_usecases:{uc.name}"})
    names = stream_names(uc.name)
    with redis_server(tmp_path) as (url, _):
        client = redis.Redis.from_url(url)
        for row in _rows(uc, EVENTS):
            client.xadd(names["events"], {"kind": "event", "data": orjson.dumps(row)})
        proc = subprocess.run(
            [*STREAM, uc.name, "-w", str(ws.settings.workspace), "--until-idle"],
            env={**os.environ, **env, "AISTACK_ONLINE_URL": url},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = [orjson.loads(f[b"data"]) for _, f in client.xrange(names["predictions"])]
    assert len(out) == EVENTS
    for answer in out:
        if uc.task == "multiclass":
            assert "score" not in answer and "decision" not in answer
            probabilities = answer["probabilities"]
            assert abs(sum(probabilities.values()) - 1) < 1e-9
            assert answer["class"] == max(probabilities, key=probabilities.get)
        elif uc.task == "regression":
            low, high = answer["interval"]
            assert low < answer["value"] < high and "score" not in answer
        else:
            assert answer["anomaly"] == (answer["score"] >= 0.6)
            assert "decision" not in answer
    # the log keeps each answer, so outputs recovered after a crash are the same
    log = ws.lake.read(f"ops.{uc.name}_prediction_log").to_pandas()
    logged = dict(zip(log["event_id"], log["answer"].map(orjson.loads), strict=True))
    for answer in out:
        fields = {k: v for k, v in answer.items() if k not in _COMMON}
        assert logged[answer["event_id"]] == fields


_COMMON = ("event_id", "model_version", "late")
