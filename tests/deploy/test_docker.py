"""The Dockerfile: multi-stage, installs from uv.lock, runs as non-root, and its
HEALTHCHECK command really checks `aistack serve`'s /health.

No image can be built here (no registry for base images): the file is checked
as text, and its health check command is run against a real server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from servers import aistack_server, free_port

ROOT = Path(__file__).parents[2]
TEXT = (ROOT / "Dockerfile").read_text()
LINES = re.sub(r"\\\n\s*", " ", TEXT).splitlines()  # continuation lines joined


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in LINES if line.startswith(name + " ")]


def stages() -> list[list[str]]:
    found: list[list[str]] = []
    for line in LINES:
        if line.startswith("FROM "):
            found.append([])
        if found and line and not line.startswith("#"):
            found[-1].append(line)
    return found


def test_multi_stage_build_installs_exactly_the_lock() -> None:
    build, runtime = stages()
    assert build[0].endswith(" AS build") and runtime[0].endswith(" AS runtime")
    assert "python:3.11" in build[0] and "python:3.11" in runtime[0]
    syncs = [line for line in build if "uv sync" in line]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    make = (ROOT / "Makefile").read_text()
    uv_version = re.search(r"UV_VERSION := (\S+)", make).group(1)
    assert f"uv:{uv_version} " in TEXT  # the same uv as `make setup`
    assert not any("uv" in line.split()[0] for line in runtime)  # no uv at run time
    for copy in instructions("COPY"):
        if "--from" in copy:
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".aistack", ".git"} <= set(ignored)


def test_runs_as_a_non_root_user_serving_on_all_interfaces() -> None:
    _, runtime = stages()
    (user,) = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    assert "useradd --system --uid 10001" in TEXT
    assert "AISTACK_HOST=0.0.0.0" in TEXT and "EXPOSE 8000" in TEXT
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["aistack"]
    assert json.loads(instructions("CMD")[-1]) == ["serve", "fraud"]


def healthcheck() -> list[str]:
    (check,) = instructions("HEALTHCHECK")
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_health_check_passes_on_a_live_server_and_fails_without(
    tmp_path,
) -> None:
    command = healthcheck()
    with aistack_server(tmp_path / "ws") as (base, _):
        port = base.rsplit(":", 1)[1]
        env = {**os.environ, "AISTACK_PORT": port}
        assert subprocess.run(command, env=env, check=False).returncode == 0
    env = {**os.environ, "AISTACK_PORT": str(free_port())}
    failed = subprocess.run(command, env=env, capture_output=True, check=False)
    assert failed.returncode != 0
