"""Serving-time inference: a loaded model version with its measured fastest paths.

At load, the model is converted to ONNX where a converter exists and checked to
give the same scores; single-row and 1,000-row predict times are then measured
for the native and the ONNX path, and each request size uses the faster one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import mlflow
import numpy as np
import numpy.typing as npt

from aistack.registry.aliases import Registry
from aistack.registry.artifacts import load_model
from aistack.training.models import ScoringModel
from aistack.training.tracking import PROFILE_ARTIFACT

Path_ = Literal["native", "onnx"]
Matrix = npt.NDArray[np.float64]
_AGREE = 1e-4
_CALLS = 200
_BUDGET_S = 0.3


def _threads_to_one(estimator: Any) -> None:  # noqa: ANN401  (any estimator)
    """Single-row latency suffers from thread pools; a server scales by processes."""
    if hasattr(estimator, "get_params") and "n_jobs" in estimator.get_params():
        estimator.set_params(n_jobs=1)


def _onnx_scorer(model: ScoringModel, width: int) -> Callable[[Matrix], Matrix]:
    """An ONNX Runtime scorer equivalent to `model.predict_matrix` (raises if none)."""
    import onnxruntime as ort  # noqa: PLC0415  (only when a model is served)

    estimator = model.estimator
    kind = type(estimator).__name__
    if kind == "XGBClassifier":
        from onnxmltools.convert import convert_xgboost  # noqa: PLC0415
        from onnxmltools.convert.common.data_types import (  # noqa: PLC0415
            FloatTensorType as XgbFloat,
        )

        plain = copy.deepcopy(estimator)
        plain.get_booster().feature_names = None  # the converter wants f0, f1, ...
        onnx = convert_xgboost(
            plain, initial_types=[("x", XgbFloat([None, width]))], target_opset=15
        )
    else:
        from skl2onnx import convert_sklearn  # noqa: PLC0415
        from skl2onnx.common.data_types import FloatTensorType  # noqa: PLC0415

        options = (
            {id(estimator): {"zipmap": False}}
            if hasattr(estimator, "predict_proba")
            else None
        )
        onnx = convert_sklearn(
            estimator,
            initial_types=[("x", FloatTensorType([None, width]))],
            target_opset={"": 17, "ai.onnx.ml": 3},
            options=options,
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        onnx.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    outputs = [o.name for o in session.get_outputs()]
    if hasattr(estimator, "predict_proba"):
        index = outputs.index("probabilities")

        def proba(matrix: Matrix) -> Matrix:
            out = session.run(None, {"x": matrix.astype(np.float32)})[index]
            return np.asarray(out[:, 1], dtype=np.float64)

        return proba
    if hasattr(estimator, "score_samples") and hasattr(estimator, "offset_"):
        offset = float(estimator.offset_)  # decision_function = score_samples - offset
        index = outputs.index("scores")

        def anomaly(matrix: Matrix) -> Matrix:
            out = session.run(None, {"x": matrix.astype(np.float32)})[index]
            return -(np.asarray(out, dtype=np.float64).ravel() + offset)

        return anomaly
    msg = f"no ONNX score mapping for {kind}"
    raise TypeError(msg)


def _time(fn: Callable[[Matrix], Matrix], matrix: Matrix, calls: int) -> float:
    """Mean microseconds per call, over at most `calls` calls or ~0.3 s."""
    fn(matrix)
    start = time.perf_counter()
    done = 0
    while done < calls and (done == 0 or time.perf_counter() - start < _BUDGET_S):
        fn(matrix)
        done += 1
    return (time.perf_counter() - start) / done * 1e6


@dataclass
class Predictor:
    """One model version ready to serve: features, defaults, and the chosen paths."""

    name: str
    version: int
    model: ScoringModel
    single: Path_ = "native"
    batch: Path_ = "native"
    timings_us: dict[str, float] = field(default_factory=dict)
    onnx_error: str | None = None
    _onnx: Callable[[Matrix], Matrix] | None = None

    @property
    def features(self) -> list[str]:
        """Feature columns in model order."""
        return list(self.model.features)

    def score(self, matrix: Matrix) -> Matrix:
        """Scores of a features matrix (rows x features), defaults already filled."""
        path = self.single if len(matrix) == 1 else self.batch
        if path == "onnx" and self._onnx is not None:
            return self._onnx(matrix)
        return self.model.predict_matrix(matrix)

    def probabilities(self, matrix: Matrix) -> tuple[list[float], Matrix] | None:
        """Each class's probability (multiclass models), else None."""
        if getattr(self.model, "task", "binary") != "multiclass":
            return None
        return self.model.classes, self.model.predict_proba_matrix(matrix)

    def intervals(self, matrix: Matrix) -> Matrix | None:
        """[low, high] per row (regression models that give one), else None."""
        return self.model.predict_interval_matrix(matrix)


def load_predictor(
    name: str, version: int, model: ScoringModel, *, sample: Matrix
) -> Predictor:
    """Prepare `model` for serving: try ONNX, check it agrees, measure, choose."""
    _threads_to_one(model.estimator)
    predictor = Predictor(name, version, model)
    rows = np.resize(sample, (1000, sample.shape[1])) if len(sample) else sample
    native = model.predict_matrix
    try:
        predictor.timings_us["native_1"] = _time(native, rows[:1], _CALLS)
        predictor.timings_us["native_1000"] = _time(native, rows, 30)
    except Exception as exc:
        predictor.onnx_error = f"native predict failed at load: {exc!r}"
        return predictor
    task = getattr(model, "task", "binary")
    if task not in ("binary", "anomaly"):
        predictor.onnx_error = f"no ONNX path for the {task} task (native only)"
        return predictor
    try:
        onnx = _onnx_scorer(model, rows.shape[1])
        gap = float(np.max(np.abs(onnx(rows) - native(rows))))
        if not gap <= _AGREE:
            raise ValueError(f"ONNX scores differ from native by {gap:.3g}")
    except Exception as exc:
        predictor.onnx_error = f"{type(exc).__name__}: {exc}"
        return predictor
    predictor._onnx = onnx
    predictor.timings_us["onnx_1"] = _time(onnx, rows[:1], _CALLS)
    predictor.timings_us["onnx_1000"] = _time(onnx, rows, 30)
    t = predictor.timings_us
    predictor.single = "onnx" if t["onnx_1"] < t["native_1"] else "native"
    predictor.batch = "onnx" if t["onnx_1000"] < t["native_1000"] else "native"
    return predictor


def load_version(
    registry: Registry, name: str, version: int
) -> tuple[Predictor, dict[str, Any] | None]:
    """A registered model version ready to serve, and its reference profile.

    The profile (quantile bins of its training data) is None for a model logged
    without one.
    """
    model = load_model(registry, name, version)
    sample = np.random.default_rng(0).random((256, len(model.features))) * 100
    predictor = load_predictor(name, version, model, sample=sample)
    run_id = registry.client.get_model_version(name, str(version)).run_id
    try:
        profile = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PROFILE_ARTIFACT}")
    except Exception:
        profile = None
    return predictor, profile
