"""The engines: embedded (calls in this process) and Dask distributed (workers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from aistack.engine.boosting import fit_xgboost, trains_on_cluster
from aistack.errors import ConfigError
from aistack.lake.silver import Engine as PartEngine
from aistack.settings import Settings

T = TypeVar("T")


class Engine(PartEngine, Protocol):
    """Runs one function per partition (`map`: the results in order, the
    partitions stages split work into) and fits estimators where it runs work."""

    def fit(
        self,
        estimator: Any,  # noqa: ANN401 (any scikit-learn-style estimator)
        matrix: npt.NDArray[np.float64],
        y: npt.NDArray[Any] | None,
    ) -> Any:  # noqa: ANN401
        """`estimator` fitted on `matrix` (labels `y`), where this engine fits it."""
        ...


def fit_here(
    estimator: Any,  # noqa: ANN401 (any scikit-learn-style estimator)
    matrix: npt.NDArray[np.float64],
    y: npt.NDArray[Any] | None,
) -> Any:  # noqa: ANN401
    """`estimator` after `estimator.fit(matrix, y)` in this process (`fit(matrix)`
    without labels)."""
    if y is None:
        estimator.fit(matrix)
    else:
        estimator.fit(matrix, y)
    return estimator


@dataclass
class EmbeddedEngine:
    """Everything in this process: the stage runs its single-partition path."""

    partitions: int = 1
    distributed: bool = False

    def map(self, fn: Callable[..., T], items: Sequence[Any]) -> list[T]:
        """Each call in turn, here."""
        return [fn(item) for item in items]

    fit = staticmethod(fit_here)  # every model fits here


@dataclass
class DaskEngine:
    """A Dask distributed cluster at `address`; connects on first use."""

    address: str
    partitions: int = 8
    distributed: bool = True
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def client(self) -> Any:  # noqa: ANN401 (distributed.Client, untyped)
        """The connected client (one per engine)."""
        if self._client is None:
            from distributed import Client  # noqa: PLC0415 (only when configured)

            try:
                client = Client(  # type: ignore[no-untyped-call]
                    self.address, timeout="10s", set_as_default=False
                )
                self._client = client
            except OSError as exc:
                msg = (
                    f"scheduler_address: no Dask scheduler answers at "
                    f"{self.address} ({exc})"
                )
                raise ConfigError(msg) from exc
        return self._client

    def map(self, fn: Callable[..., T], items: Sequence[Any]) -> list[T]:
        """Each call as a task on the cluster's workers; results in item order."""
        futures = self.client.map(fn, items, pure=False)
        return list(self.client.gather(futures))

    def fit(
        self,
        estimator: Any,  # noqa: ANN401
        matrix: npt.NDArray[np.float64],
        y: npt.NDArray[Any] | None,
    ) -> Any:  # noqa: ANN401
        """On the workers through `xgboost.dask` when it can train the model (a
        supervised XGBoost classifier or regressor, tree_method hist or approx);
        any other model fits here, in the driver."""
        if y is not None and trains_on_cluster(estimator):
            return fit_xgboost(self.client, estimator, matrix, y)
        return fit_here(estimator, matrix, y)

    def close(self) -> None:
        """Disconnect from the scheduler (the cluster keeps running)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def open_engine(settings: Settings) -> EmbeddedEngine | DaskEngine:
    """The engine the settings choose (`engine`, `scheduler_address`)."""
    if settings.engine == "dask":
        assert settings.scheduler_address is not None  # checked by Settings
        return DaskEngine(settings.scheduler_address, settings.engine_partitions)
    return EmbeddedEngine()
