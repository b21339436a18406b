"""The `aistack` command, run as a user would: real subprocesses, exit codes, output."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from aistack.lake.delta import Lake
from conftest import make_workspace
from lake.test_silver import assert_accounted, late_customer_lake

SMALL = ["--customers", "300", "--terminals", "600", "--days", "45"]


def aistack(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aistack", *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "COLUMNS": "200",
            "HOME": str(cwd),
            **(env or {}),
        },
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "fraud", "--customerz", "3"],
            "--customerz: not an option of use case fraud",
        ),
        (
            ["run", "fraud", "--days", "-1"],
            "--days: Input should be greater than or equal to 1",
        ),
        (["run", "fraud", "--days"], "--days: expected a value"),
        (
            ["run", "fraud", "--source", "/no/such/dir"],
            "--source: Value error, /no/such/dir is not a folder",
        ),
        (["run", "fraud", "--stage", "cook"], "--stage: unknown cook"),
        (["run", "nope"], "use case 'nope' is not registered"),
        (
            ["serve", "fraud", "--host", "0.0.0.0"],
            "host: 0.0.0.0 exposes the API beyond this machine with no bearer token",
        ),
        (
            ["run", "fraud", "--start", "2018-01-01"],
            "--start and --end: give both or neither",
        ),
        (
            ["promote", "fraud", "0"],
            "Invalid value for 'version': Input should be greater than or equal to 1",
        ),
        (["lineage", "fraud"], "alias 'champion': model fraud has no such alias yet"),
        (
            ["run", "fraud", "--seed", "-4"],
            "seed: Input should be greater than or equal to 0",
        ),
        (
            ["tune", "fraud", "--trials", "3", "--seconds", "5"],
            "--trials and --seconds: give one budget, not both",
        ),
        (
            ["tune", "fraud", "--trainer", "nope"],
            "--trainer: nope not a trainer of fraud",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_field(tmp_path: Path, args, message) -> None:
    result = aistack(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in " ".join((result.stderr + result.stdout).split())
    assert "Traceback" not in result.stderr


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "aistack.toml").write_text("seed = 'many'\n")
    result = aistack("tables", cwd=tmp_path)
    assert result.returncode == 2
    assert "seed: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_then_inspect(tmp_path: Path) -> None:
    first = aistack("run", "fraud", *SMALL, "--bad-rows", "2", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "champion: fraud version" in first.stdout
    assert "silver.transactions" in first.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in first.stdout
    tables = aistack("tables", cwd=tmp_path)
    assert "gold.fraud_customer_spending" in tables.stdout
    lineage = aistack("lineage", "fraud", cwd=tmp_path)
    assert lineage.returncode == 0
    assert "silver.transactions@0" in lineage.stdout
    assert "gold.fraud_terminal_risk@0" in lineage.stdout
    models = aistack("models", "fraud", cwd=tmp_path)
    assert "champion" in models.stdout
    promote = aistack(  # version 1 (the forest) failed its gates: --force
        "promote", "fraud", "1", "--force", "--reason", "try the forest", cwd=tmp_path
    )
    assert promote.returncode == 0, promote.stderr
    history = aistack("models", "fraud", "--history", cwd=tmp_path)
    assert "try the forest" in history.stdout
    rollback = aistack("rollback", "fraud", cwd=tmp_path)
    assert rollback.returncode == 0, rollback.stderr
    assert "-> 1" not in rollback.stdout
    # a second run on the same inputs writes no new table version
    before = aistack("tables", cwd=tmp_path).stdout
    again = aistack("run", "fraud", *SMALL, "--bad-rows", "2", "--quiet", cwd=tmp_path)
    assert again.returncode == 0
    assert aistack("tables", cwd=tmp_path).stdout == before
    assert "unchanged" in again.stdout
    quarantine = aistack("quarantine", "fraud", "--limit", "3", cwd=tmp_path)
    assert quarantine.returncode == 0, quarantine.stderr
    text = " ".join(quarantine.stdout.split())
    assert "quarantine.transactions:" in text and "duplicate_key" in text
    assert "batch" in text and "reason" in text


def test_a_broken_plugin_is_reported_and_the_others_keep_working(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    info = site / "broken_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[aistack.use_cases]\nexploding = broken_uc:use_case\nnot_one = json:dumps\n"
    )
    (site / "broken_uc.py").write_text("raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": str(site)}
    listed = aistack("use-cases", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    text = " ".join(listed.stdout.split())
    assert "fraud" in text and "ok" in text
    assert "exploding" in text and "boom at import" in text
    assert "not_one" in text and "expected a UseCase" in text
    run = aistack("run", "exploding", cwd=tmp_path, env=env)
    assert run.returncode == 2 and "boom at import" in run.stderr
    assert "Traceback" not in run.stderr
    tables = aistack("quarantine", "fraud", cwd=tmp_path, env=env)
    assert tables.returncode == 0, tables.stderr


def test_run_help_lists_the_use_case_options(tmp_path: Path) -> None:
    shown = aistack("run", "fraud", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "options of use case fraud" in text
    assert (
        "--customers" in text and "simulated customers" in text and "2018-04-01" in text
    )
    assert "--stage" in text  # the platform's own options too


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))  # what a hostile pickle would run


def test_pickle_in_a_source_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "2018-04-01.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    refused = aistack("run", "fraud", "--source", str(folder), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "2018-04-01.pkl is pickle data, which can run code" in " ".join(
        refused.stderr.split()
    )
    assert not marker.exists()
    assert not (tmp_path / ".aistack" / "tables" / "bronze").exists()  # nothing written


def test_a_damaged_table_log_is_a_one_line_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path / ".aistack" / "tables")
    lake.write("silver.things", pa.table({"a": [1, 2]}), mode="append")
    lake.write("silver.things", pa.table({"a": [3]}), mode="append")
    log = lake.path("silver.things") / "_delta_log" / f"{1:020d}.json"
    log.write_text("{not json")  # a torn write, a bad disk, a careless edit
    shown = aistack("tables", cwd=tmp_path)
    assert shown.returncode == 2, shown.stdout
    assert "table silver.things is unreadable" in shown.stderr
    assert "_delta_log" in shown.stderr and "Traceback" not in shown.stderr
    assert len(shown.stderr.strip().splitlines()) <= 3


def test_a_second_run_on_a_busy_workspace_is_refused(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / ".aistack")
    with ws.exclusive("aistack run fraud (the test's)"):
        second = aistack("run", "fraud", *SMALL, cwd=tmp_path)
    assert second.returncode == 2, second.stdout
    assert "is busy: pid" in second.stderr and "the test's" in second.stderr
    assert "Traceback" not in second.stderr
    assert not (tmp_path / ".aistack" / "tables" / "bronze").exists()  # nothing ran


def test_help_loads_no_heavy_library(tmp_path: Path) -> None:
    """`aistack --help` and every command's --help answer without MLflow, the
    model libraries or the server: commands import those when they run."""
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from aistack.cli import app\n"
        "runner = CliRunner()\n"
        "for args in ([], ['run'], ['serve', '--help'], ['monitor', '--help']):\n"
        "    result = runner.invoke(app, [*args, '--help'] if not args else args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "heavy = {'mlflow', 'xgboost', 'lightgbm', 'sklearn', 'fastapi', 'duckdb'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_quarantine_retry_releases_late_references(tmp_path: Path) -> None:
    lake, expected = late_customer_lake(tmp_path / ".aistack" / "tables")
    silver_before = lake.rows("silver.transactions")
    done = aistack("quarantine", "fraud", "--retry", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "quarantine retry" in done.stdout
    assert f"{expected:,}" in done.stdout
    assert lake.rows("silver.transactions") == silver_before + expected
    assert_accounted(lake)
