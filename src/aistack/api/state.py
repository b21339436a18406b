"""What a running server holds: settings, stores, the current model, the log."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import mlflow
import numpy as np

from aistack.api.metrics import ServerMetrics
from aistack.platform.delta import Lake
from aistack.platform.inference import Predictor, load_predictor
from aistack.platform.online import OnlineStore, open_store, versions
from aistack.platform.registry import Registry
from aistack.platform.serving import PredictionLog
from aistack.platform.usecase import UseCase
from aistack.settings import Settings

log = logging.getLogger("aistack.server")


def prediction_log_table(use_case: UseCase) -> str:
    """Delta table of a use case's online predictions."""
    return f"ops.{use_case.name}_prediction_log"


@dataclass
class ServerState:
    """Everything the routes read; the predictor is swapped atomically."""

    use_case: UseCase
    settings: Settings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    predictor: Predictor | None = None
    online_versions_cached: dict[str, int] = field(default_factory=dict)
    lake: Lake = field(init=False)
    store: OnlineStore = field(init=False)
    registry: Registry = field(init=False)
    log: PredictionLog = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _poller: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.lake = Lake(self.settings.tables_dir)
        self.store = open_store(
            self.settings.online_url, self.settings.workspace, self.use_case.name
        )
        self.registry = Registry(self.lake, self.settings.mlflow_uri)
        self.log = PredictionLog(
            self.lake,
            prediction_log_table(self.use_case),
            flush_seconds=self.settings.log_flush_seconds,
        )

    def online_versions(self) -> dict[str, int]:
        """Gold version each view's online values reflect."""
        return dict(versions(self.store, [v.name for v in self.use_case.views]))

    def refresh_model(self) -> bool:
        """Load the champion if it changed; True when a new model is now served."""
        name = self.use_case.name
        version = self.registry.version_of(name, "champion")
        current = self.predictor
        if version is None or (current is not None and current.version == version):
            return False
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
        sample = np.random.default_rng(0).random((256, len(model.features))) * 100
        predictor = load_predictor(name, version, model, sample=sample)
        self.predictor = predictor  # one reference assignment: requests see old or new
        if current is not None:
            self.metrics.model.remove(
                current.name, str(current.version), current.single, current.batch
            )
            self.metrics.swaps.inc()
        self.metrics.model.labels(
            name, str(version), predictor.single, predictor.batch
        ).set(1)
        log.info(
            "serving %s version %s (single row: %s, batch: %s, timings us: %s%s)",
            name,
            version,
            predictor.single,
            predictor.batch,
            {k: round(v) for k, v in predictor.timings_us.items()},
            f", onnx unavailable: {predictor.onnx_error}"
            if predictor.onnx_error
            else "",
        )
        return True

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.online_versions_cached = self.online_versions()
                self.refresh_model()
            except Exception:  # a failed load keeps the current model serving
                log.exception("loading the new champion failed; still serving the old")

    def start(self) -> None:
        """Load the champion (if any), start the poller and the log flusher."""
        mlflow.set_tracking_uri(self.settings.mlflow_uri)
        mlflow.set_registry_uri(self.settings.mlflow_uri)
        try:
            self.online_versions_cached = self.online_versions()
            self.refresh_model()
        except Exception:
            log.exception("loading the champion failed; /ready reports 503")
        self.log.start()
        self._poller = threading.Thread(
            target=self._poll, name="model-poller", daemon=True
        )
        self._poller.start()

    def stop(self) -> None:
        """Stop polling and flush every buffered prediction."""
        self._stop.set()
        self.log.close()
