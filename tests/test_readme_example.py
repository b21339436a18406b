"""The README's "Write your own use case" example, run exactly as written: its
code as a plugin package, then `aistack use-cases`, `run`, `serve`, the curl
request's payload and `monitor`, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from servers import aistack_server
from test_cli import aistack

README = Path(__file__).parents[1] / "README.md"


def example_code() -> str:
    text = README.read_text()
    found = re.search(r"<!-- example: my_iris.py -->\n```python\n(.*?)```", text, re.S)
    assert found, "README lost its use-case example"
    return found.group(1)


def curl_payload() -> dict:
    text = README.read_text()
    found = re.search(r"/v1/iris/predict .*?-d '(\{.*?\})'", text, re.S)
    assert found, "README lost the example's curl request"
    return json.loads(found.group(1))


def test_the_readme_use_case_runs_end_to_end(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "my_iris-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "my_iris.py").write_text(example_code())
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-iris\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[aistack.use_cases]\niris = my_iris:use_case\n"
    )
    env = {"PYTHONPATH": str(site)}
    listed = aistack("use-cases", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "iris" in listed.stdout, listed.stderr
    done = aistack("run", "iris", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "champion" in done.stdout
    with aistack_server(tmp_path / ".aistack", env=env, use_case="iris") as (base, _):
        answer = httpx.post(f"{base}/v1/iris/predict", json=curl_payload())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["class"] == "0"  # a setosa's measurements
        assert body["probabilities"]["0"] > 0.9
        bad = httpx.post(f"{base}/v1/iris/predict", json={"sepal_length": "x"})
        assert bad.status_code == 422
    monitored = aistack("monitor", "iris", cwd=tmp_path, env=env)
    assert monitored.returncode == 0, monitored.stderr
