"""Serving-time inference: a loaded model version with its measured fastest paths.

At load, up to three paths are prepared: the estimator's own `predict_proba`
(native), its gradient-boosting library's booster called directly (XGBoost's
`inplace_predict`, LightGBM's `Booster.predict`: the same trees without the
scikit-learn wrapper's parameter and input checks, which cost ~1 ms a call),
and ONNX Runtime where a converter exists. Each is checked to give the native
scores; single-row and 1,000-row predict times are then measured and each
request size uses the fastest.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import time
import weakref
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

Path_ = Literal["native", "booster", "onnx"]
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
    elif kind == "LGBMClassifier":  # ONNX Runtime's trees beat LightGBM's own
        # predict on deep ensembles (150 trees: 12.1 -> 7.4 ms per 1,000 rows)
        from onnxmltools.convert import convert_lightgbm  # noqa: PLC0415
        from onnxmltools.convert.common.data_types import (  # noqa: PLC0415
            FloatTensorType as LgbFloat,
        )

        onnx = convert_lightgbm(
            estimator,
            initial_types=[("x", LgbFloat([None, width]))],
            target_opset=15,
            zipmap=False,
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
    opts.log_severity_level = 3  # errors only: converted trees declare a label
    # shape of {1} and ORT would warn on every batch (we check the scores)
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


def _booster_scorer(model: ScoringModel) -> Callable[[Matrix], Matrix] | None:
    """The boosting library's own predict on the fitted trees (binary
    probabilities or regression values, as `predict_matrix`); None where the
    estimator is not a bare XGBoost/LightGBM model."""
    task = getattr(model, "task", "binary")
    kind = type(model.estimator).__name__
    if task not in ("binary", "regression"):
        return None
    if kind in ("XGBClassifier", "XGBRegressor"):
        booster = model.estimator.get_booster()  # any objective: checked at load
        missing = model.estimator.missing  # the estimator's own missing marker

        def xgb(matrix: Matrix) -> Matrix:
            out = booster.inplace_predict(
                matrix, missing=missing, validate_features=False
            )
            return np.asarray(out, dtype=np.float64).ravel()

        return xgb
    if kind in ("LGBMClassifier", "LGBMRegressor"):
        lgb_booster = model.estimator.booster_
        one_row = _lgb_single_row(lgb_booster)

        def lgb(matrix: Matrix) -> Matrix:
            if one_row is not None and len(matrix) == 1:
                return one_row(matrix)
            out = lgb_booster.predict(matrix, num_threads=1)
            return np.asarray(out, dtype=np.float64).ravel()

        return lgb
    return None


def _lgb_single_row(booster: Any) -> Callable[[Matrix], Matrix] | None:  # noqa: ANN401
    """LightGBM's single-row C API (`...SingleRowFastInit` once per model, then
    one call a row): `Booster.predict` builds a predictor per call, most of a
    single row's time. None where this LightGBM does not offer it; the result
    is checked against native at load like every path."""
    try:
        from lightgbm.basic import _LIB, _safe_call  # type: ignore[attr-defined]  # noqa: PLC0415

        config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(0),  # C_API_PREDICT_NORMAL: probabilities, values
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(booster.best_iteration or -1),  # as Booster.predict
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(booster.num_feature()),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(config),
            )
        )
        predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
    except Exception:  # an older or different LightGBM: Booster.predict serves
        return None
    double_p = ctypes.POINTER(ctypes.c_double)

    def one(matrix: Matrix) -> Matrix:
        row = np.ascontiguousarray(matrix[0], dtype=np.float64)
        out = np.empty(1, dtype=np.float64)
        length = ctypes.c_int64()
        _safe_call(
            predict(
                config,
                row.ctypes.data_as(ctypes.c_void_p),
                ctypes.byref(length),
                out.ctypes.data_as(double_p),
            )
        )
        return out

    weakref.finalize(one, _LIB.LGBM_FastConfigFree, config)
    return one


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
    _paths: dict[str, Callable[[Matrix], Matrix]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        """Feature columns in model order."""
        return list(self.model.features)

    def score(self, matrix: Matrix) -> Matrix:
        """Scores of a features matrix (rows x features), defaults already filled."""
        path = self.single if len(matrix) == 1 else self.batch
        scorer = self._paths.get(path)
        return (
            scorer(matrix) if scorer is not None else self.model.predict_matrix(matrix)
        )

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
    """Prepare `model` for serving: try the booster and ONNX paths, check they
    agree with native, measure each, serve every request size by the fastest
    on 1,000-row batches."""
    _threads_to_one(model.estimator)
    predictor = Predictor(name, version, model)
    rows = np.resize(sample, (1000, sample.shape[1])) if len(sample) else sample
    native = model.predict_matrix
    try:
        expected = native(rows)
        predictor.timings_us["native_1"] = _time(native, rows[:1], _CALLS)
        predictor.timings_us["native_1000"] = _time(native, rows, 30)
    except Exception as exc:
        predictor.onnx_error = f"native predict failed at load: {exc!r}"
        return predictor
    candidates: dict[str, Callable[[Matrix], Matrix]] = {}
    booster = _booster_scorer(model)
    if booster is not None and _agrees(booster, rows, expected) is None:
        candidates["booster"] = booster
    task = getattr(model, "task", "binary")
    if task not in ("binary", "anomaly"):
        predictor.onnx_error = f"no ONNX path for the {task} task (native only)"
    else:
        try:
            onnx = _onnx_scorer(model, rows.shape[1])
            predictor.onnx_error = _agrees(onnx, rows, expected)
            if predictor.onnx_error is None:
                candidates["onnx"] = onnx
        except Exception as exc:
            predictor.onnx_error = f"{type(exc).__name__}: {exc}"
    for path, scorer in candidates.items():
        predictor.timings_us[f"{path}_1"] = _time(scorer, rows[:1], _CALLS)
        predictor.timings_us[f"{path}_1000"] = _time(scorer, rows, 30)
    predictor._paths = candidates
    t = predictor.timings_us
    options: list[Path_] = ["native", *candidates]  # type: ignore[list-item]
    # one path for every request size: a row's score must not depend on the
    # rows it is batched with (ONNX scores float32 inputs, the boosters float64)
    predictor.single = predictor.batch = min(options, key=lambda p: t[f"{p}_1000"])
    return predictor


def _agrees(
    scorer: Callable[[Matrix], Matrix], rows: Matrix, expected: Matrix
) -> str | None:
    """None when `scorer` gives the native scores (to 1e-4), else why not."""
    try:
        gap = float(np.max(np.abs(scorer(rows) - expected))) if len(rows) else 0.0
        for i in range(min(len(rows), 20)):  # single rows may take another path
            gap = max(gap, float(np.max(np.abs(scorer(rows[i : i + 1]) - expected[i]))))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if gap <= _AGREE else f"scores differ from native by {gap:.3g}"


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation (Python's
default: 700). A scored batch allocates a few objects per row and frees them
by reference counting; collecting every 700 allocations only rescans them: a
1,000-row batch of the real-time benchmark in process, 76 -> 67 us of CPU a
row (10,000: 72; 100,000: 68)."""


def settle_heap() -> None:
    """Tune the garbage collector of a long-running server or consumer, after
    a model load: collect once, then move every object alive (the modules, the
    loaded models) out of the collector's generations (`gc.freeze`), so a full
    collection scans only what was allocated since (a stream consumer's took
    150-235 ms each, a stall of every event behind it: the p99 of a 60 s run
    at 5,000 events/s; after this, 7 ms on average); and collect the youngest
    generation less often (`GC_YOUNG_THRESHOLD`). Unfrozen first, so that the
    models let go since are collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


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
