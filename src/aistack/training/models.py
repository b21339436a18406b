"""The model object the platform trains, logs, gates and serves.

`ScoringModel` wraps any scikit-learn-style estimator: it selects the feature
columns (so an id column in the input is ignored unless a model reads it), fills
unknown features with their declared defaults, and returns one score per row,
read as the use case's task says: binary, `predict_proba[:, 1]` (or
`decision_function`); anomaly, `-score_samples` (or `-decision_function`),
higher meaning more anomalous; regression, `predict`; multiclass, the most
probable class (`predict_proba_matrix` gives every class's probability).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator

from aistack.engine import Engine
from aistack.engine.cluster import fit_here
from aistack.errors import NotFittedError, SchemaError


class Scorer(Protocol):
    """Anything that scores a frame of model inputs, one float per row."""

    def predict(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """One score per row."""
        ...


class ScoringModel(BaseEstimator):  # type: ignore[misc]
    """Estimator + feature list + defaults -> one score per row."""

    def __init__(
        self,
        estimator: Any,  # noqa: ANN401  (any scikit-learn-style estimator)
        features: list[str],
        defaults: Mapping[str, float],
        *,
        supervised: bool,
        task: str = "binary",
    ) -> None:
        self.estimator = estimator
        self.features = features
        self.defaults = defaults
        self.supervised = supervised
        self.task = task

    def _matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise SchemaError(
                f"model input lacks feature columns: {', '.join(missing)}"
            )
        defaults = {k: v for k, v in self.defaults.items() if k in self.features}
        return frame[self.features].astype("float64").fillna(defaults)

    def input_matrix(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """The float matrix the estimator reads: `features` of `frame`, defaults
        filled (what `predict_matrix` takes)."""
        return self._matrix(frame).to_numpy()

    def fit(
        self,
        frame: pd.DataFrame,
        y: npt.ArrayLike | None = None,
        *,
        engine: Engine | None = None,
    ) -> Self:
        """Fit on the feature columns of `frame` (labels only when supervised),
        where `engine` fits the estimator (default: here)."""
        matrix = self._matrix(frame).to_numpy()
        labels = np.asarray(y) if self.supervised else None
        fitted = (
            engine.fit(self.estimator, matrix, labels)
            if engine is not None
            else fit_here(self.estimator, matrix, labels)
        )
        self.estimator = fitted  # the same object unless trained elsewhere
        self.n_features_in_ = len(self.features)
        return self

    def predict(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """One score per row of `frame`; higher is more likely positive."""
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError("ScoringModel.predict called before fit")
        return self.predict_matrix(self._matrix(frame).to_numpy())

    def predict_matrix(
        self, matrix: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Scores of a float matrix whose columns are `features`, defaults filled."""
        task = getattr(self, "task", "binary")
        est = self.estimator
        if task == "regression":
            scores = est.predict(matrix)
        elif task == "multiclass":
            proba = est.predict_proba(matrix)
            scores = np.asarray(self.classes)[np.argmax(proba, axis=1)]
        elif task == "anomaly":
            if hasattr(est, "score_samples"):
                scores = -est.score_samples(matrix)
            else:
                scores = -est.decision_function(matrix)
        elif hasattr(est, "predict_proba"):
            scores = est.predict_proba(matrix)[:, 1]
        elif hasattr(est, "score_samples"):  # an unsupervised detector
            scores = -est.score_samples(matrix)
        else:
            scores = est.decision_function(matrix)
        return np.asarray(scores, dtype=np.float64).ravel()

    def calibrate_interval(
        self, frame: pd.DataFrame, y: npt.ArrayLike, *, coverage: float
    ) -> Self:
        """Residual-quantile interval (split conformal) from rows not fitted on.

        The half width is the ceil((n + 1) * coverage)-th smallest absolute
        residual of the n calibration rows, so a new row's value falls inside
        [value - w, value + w] with probability >= coverage (rows exchangeable).
        """
        actual = np.asarray(y, dtype=np.float64)
        residuals = np.sort(np.abs(actual - self.predict(frame)))
        rank = int(np.ceil((len(residuals) + 1) * coverage))
        if rank > len(residuals):
            msg = (
                f"interval: {len(residuals)} validation rows cannot calibrate a "
                f"{coverage:.0%} interval (needs >= {rank}); enlarge the validation "
                "part"
            )
            raise SchemaError(msg)
        self.interval_half_width_ = float(residuals[rank - 1])
        self.interval_coverage_ = coverage
        return self

    def predict_interval_matrix(
        self, matrix: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64] | None:
        """[low, high] per row: the estimator's own `predict_interval` where it has
        one, else the calibrated residual interval, else None."""
        if getattr(self, "task", "binary") != "regression":
            return None
        native = getattr(self.estimator, "predict_interval", None)
        if callable(native):
            return np.asarray(native(matrix), dtype=np.float64).reshape(-1, 2)
        width = getattr(self, "interval_half_width_", None)
        if width is None:
            return None
        values = self.predict_matrix(matrix)
        return np.column_stack([values - width, values + width])

    def predict_interval(self, frame: pd.DataFrame) -> npt.NDArray[np.float64] | None:
        """[low, high] per row of `frame` (None: the model gives no interval)."""
        return self.predict_interval_matrix(self._matrix(frame).to_numpy())

    @property
    def classes(self) -> list[float]:
        """The classes of a classifier, in the columns' order of its probabilities."""
        classes = getattr(self.estimator, "classes_", None)
        if classes is None:  # e.g. a pipeline without classes_: its last step
            classes = getattr(self.estimator[-1], "classes_", None)
        if classes is None:
            raise SchemaError("a multiclass model must expose classes_")
        return [float(c) for c in classes]

    def predict_proba_matrix(
        self, matrix: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Each class's probability (rows x classes, in `classes` order)."""
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)

    def predict_proba(self, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Each class's probability per row of `frame`."""
        return self.predict_proba_matrix(self._matrix(frame).to_numpy())
