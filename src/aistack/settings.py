"""Settings: one pydantic object built at the entry point and passed down.

Read from `AISTACK_*` environment variables and an optional `aistack.toml` in the
working directory (or the file named by `AISTACK_CONFIG`); arguments win over both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from aistack.errors import ConfigError


class Settings(BaseSettings):
    """Where AI Stack keeps its state, and how runs are seeded."""

    model_config = SettingsConfigDict(
        env_prefix="AISTACK_", toml_file="aistack.toml", extra="forbid"
    )

    workspace: Path = Field(
        default=Path(".aistack"),
        description="Folder with the Delta tables, MLflow store and artifacts.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI; default sqlite in the workspace; "
        "postgresql://… is read as postgresql+psycopg://….",
    )
    seed: int = Field(default=42, ge=0, description="Seed for simulators and models.")
    online_url: str | None = Field(
        default=None,
        description="Online store: redis://HOST:PORT/DB (default: SQLite file).",
    )
    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens the API accepts; empty: no authentication.",
    )
    policy: Path | None = Field(
        default=None,
        description="Policy file (TOML) of principals, roles, grants and token "
        "hashes; none: a single local admin.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="The CLI caller's token (AISTACK_TOKEN), when a policy is set.",
    )
    audit_predictions: bool = Field(
        default=True, description="Record every served prediction in the audit log."
    )
    audit_flush_seconds: float = Field(
        default=1.0, gt=0, description="How often served predictions are audited."
    )
    retention_days: dict[
        Literal["prediction_log", "audit", "quarantine"], PositiveFloat
    ] = Field(
        default_factory=dict,
        description="Days kept per table kind (prediction_log, audit, "
        "quarantine) by `aistack vacuum`; absent: kept for ever.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    allow_open_access: bool = Field(
        default=False,
        description="Serve beyond loopback without bearer tokens (refused otherwise).",
    )
    port: int = Field(
        default=8000, ge=1, le=65535, description="Port the server binds."
    )
    poll_seconds: float = Field(
        default=5.0, gt=0, description="How often the server checks for a new champion."
    )
    max_batch_rows: int = Field(
        default=10_000, ge=1, description="Most rows one batch request may carry."
    )
    log_flush_seconds: float = Field(
        default=5.0, gt=0, description="Prediction log flush interval (seconds)."
    )
    shadow_queue: int = Field(
        default=1000,
        ge=1,
        description="Requests waiting for shadow scoring before more shadow work is "
        "dropped (counted in aistack_shadow_dropped_total); the champion's answers "
        "and their log rows are never held back by it.",
    )
    eval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the server checks rollout guards, drift and alerts.",
    )
    consistency_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often the server recomputes logged features offline "
        "(aistack_online_offline_mismatch_rate).",
    )
    consistency_window_seconds: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="How far back (by log time) the consistency check reads.",
    )
    drift_histograms: bool = Field(
        default=True,
        description="Count served values in reference bins for the PSI gauges.",
    )
    alert_webhook_url: str | None = Field(
        default=None, description="Where alerts are POSTed (JSON); none: only recorded."
    )
    stream_url: str | None = Field(
        default=None,
        description="Redis holding the event streams (default: online_url if Redis).",
    )
    stream_partitions: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Partitions of the event stream: events of one entity (the "
        "entity of the views over recent events) always go to the same one, read "
        "by one consumer at a time, so that entity's state is updated in order.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OTLP/HTTP traces endpoint (http://collector:4318/v1/traces); "
        "none: tracing off.",
    )
    pii_key_env: str = Field(
        default="AISTACK_PII_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the PII master key (64 hex "
        "digits); read only when a use case declares PII columns.",
    )
    pii_key_file: Path | None = Field(
        default=None,
        description="File holding the PII master key (64 hex digits), outside the "
        "workspace; wins over pii_key_env.",
    )
    audit_key_env: str = Field(
        default="AISTACK_AUDIT_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the audit signing key (64 hex "
        "digits, HMAC-SHA256 over checkpoints); unset: the audit log is unsigned.",
    )
    audit_key_file: Path | None = Field(
        default=None,
        description="File holding the audit signing key (64 hex digits), outside "
        "the workspace; wins over audit_key_env.",
    )
    audit_anchor_file: Path | None = Field(
        default=None,
        description="File outside the workspace where every audit append records "
        "the log's last record (number and hash), so `audit verify` detects "
        "records cut from the end; keep it on another volume or host.",
    )
    erasure_retention_hours: float = Field(
        default=0.0,
        ge=0,
        description="`aistack forget` vacuums files removed more than this long "
        "ago; 0 removes the erased rows' old files at once.",
    )
    stream_failpoint: str | None = Field(
        default=None,
        pattern=r"^(after_state|after_commit):[1-9][0-9]*$",
        description="Fault injection for tests: `after_state:N` or `after_commit:N` "
        "kills the consumer (SIGKILL) at that point of its N-th batch.",
    )

    engine: Literal["duckdb", "dask"] = Field(
        default="duckdb",
        description="Where gold, training sets and batch scoring run: embedded "
        "DuckDB, or a Dask distributed cluster (needs scheduler_address).",
    )
    scheduler_address: str | None = Field(
        default=None,
        pattern=r"^(tcp|tls)://[^\s/]+:[0-9]+$",
        description="The Dask scheduler (tcp://HOST:PORT) when engine is dask.",
    )
    engine_partitions: int = Field(
        default=8,
        ge=1,
        le=4096,
        description="Entity-hash partitions a cluster stage splits its work into.",
    )

    @model_validator(mode="after")
    def _engine_has_a_cluster(self) -> Settings:
        if self.engine == "dask" and self.scheduler_address is None:
            msg = "scheduler_address: required when engine is dask (tcp://HOST:PORT)"
            raise ValueError(msg)
        return self

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        schemes = ("sqlite:///", "postgresql", "file:", "http://", "https://")
        if not value.startswith(schemes):
            msg = f"expected a URI starting with one of {', '.join(schemes)}"
            raise ValueError(msg)
        if value.startswith("postgresql://"):  # psycopg 3 is the installed driver
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if value.startswith("postgresql+") and not value.startswith(
            "postgresql+psycopg://"
        ):
            msg = "expected postgresql+psycopg:// (the installed driver, psycopg 3)"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> Settings:
        if self.policy is not None and self.api_tokens:
            msg = (
                f"a policy is set ({self.policy}): give each token's holder a "
                "principal (`aistack principal add NAME --role service`) and unset "
                "AISTACK_API_TOKENS"
            )
            raise ValueError(msg)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then environment, then `aistack.toml`."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def tables_dir(self) -> Path:
        """Root folder of every Delta table."""
        return self.workspace / "tables"

    @property
    def artifacts_dir(self) -> Path:
        """Root folder of MLflow artifacts."""
        return self.workspace / "artifacts"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking and registry URI in force."""
        if self.tracking_uri is not None:
            return self.tracking_uri
        return f"sqlite:///{self.workspace.resolve() / 'mlflow.db'}"


def load_settings(
    *,
    workspace: Path | str | None = None,
    tracking_uri: str | None = None,
    seed: int | None = None,
    online_url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    stream_partitions: int | None = None,
) -> Settings:
    """Build settings, turning validation failures into one `ConfigError`.

    Arguments left as None fall back to the environment, then `aistack.toml`.
    Each failure is named by its field, as `field: reason`.
    """
    given: dict[str, Any] = {
        "workspace": workspace,
        "tracking_uri": tracking_uri,
        "seed": seed,
        "online_url": online_url,
        "host": host,
        "port": port,
        "stream_partitions": stream_partitions,
    }
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("invalid settings: " + "; ".join(parts)) from exc
    except (OSError, ValueError) as exc:  # unreadable or malformed aistack.toml
        raise ConfigError(f"invalid settings file aistack.toml: {exc}") from exc
