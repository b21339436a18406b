"""Settings: arguments, then environment, then aistack.toml; errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aistack.errors import ConfigError
from aistack.settings import load_settings


def test_defaults_and_precedence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AISTACK_SEED", raising=False)
    settings = load_settings()
    assert settings.workspace == Path(".aistack")
    assert settings.mlflow_uri == f"sqlite:///{tmp_path / '.aistack' / 'mlflow.db'}"
    (tmp_path / "aistack.toml").write_text('seed = 5\nworkspace = "from-toml"\n')
    assert load_settings().seed == 5
    monkeypatch.setenv("AISTACK_SEED", "6")
    assert load_settings().seed == 6
    assert load_settings(seed=7).seed == 7
    assert load_settings().workspace == Path("from-toml")


def test_bad_values_name_the_field(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match="seed: Input should be greater than or equal to 0"
    ):
        load_settings(seed=-1)
    with pytest.raises(ConfigError, match="tracking_uri: Value error, expected a URI"):
        load_settings(tracking_uri="mysql://x")
    (tmp_path / "aistack.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour: Extra inputs are not permitted"):
        load_settings()
    (tmp_path / "aistack.toml").write_text("seed = \n")
    with pytest.raises(ConfigError, match=r"aistack\.toml"):
        load_settings()


def test_postgresql_uris_use_psycopg_3(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain = load_settings(tracking_uri="postgresql://u@127.0.0.1:5432/mlflow")
    assert plain.mlflow_uri == "postgresql+psycopg://u@127.0.0.1:5432/mlflow"
    given = "postgresql+psycopg://u@db/mlflow"
    assert load_settings(tracking_uri=given).mlflow_uri == given
    with pytest.raises(ConfigError, match=r"tracking_uri: .*postgresql\+psycopg://"):
        load_settings(tracking_uri="postgresql+psycopg2://u@db/mlflow")


def test_engine_settings_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().engine == "duckdb"
    monkeypatch.setenv("AISTACK_ENGINE", "dask")
    with pytest.raises(ConfigError, match="scheduler_address: required when engine"):
        load_settings()
    monkeypatch.setenv("AISTACK_SCHEDULER_ADDRESS", "127.0.0.1:8786")
    with pytest.raises(ConfigError, match="scheduler_address: String should match"):
        load_settings()
    monkeypatch.setenv("AISTACK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    monkeypatch.setenv("AISTACK_ENGINE_PARTITIONS", "4")
    settings = load_settings()
    assert (settings.engine, settings.scheduler_address) == (
        "dask",
        "tcp://127.0.0.1:8786",
    )
    assert settings.engine_partitions == 4
    monkeypatch.setenv("AISTACK_ENGINE", "spark")
    with pytest.raises(ConfigError, match="engine: Input should be 'duckdb' or 'dask'"):
        load_settings()


def test_consistency_settings_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert (settings.consistency_seconds, settings.consistency_window_seconds) == (
        300.0,
        7 * 86400.0,
    )
    monkeypatch.setenv("AISTACK_CONSISTENCY_SECONDS", "1")
    monkeypatch.setenv("AISTACK_CONSISTENCY_WINDOW_SECONDS", "3600")
    settings = load_settings()
    assert (settings.consistency_seconds, settings.consistency_window_seconds) == (
        1.0,
        3600.0,
    )
    monkeypatch.setenv("AISTACK_CONSISTENCY_SECONDS", "0")
    with pytest.raises(ConfigError, match="consistency_seconds: Input should be"):
        load_settings()
