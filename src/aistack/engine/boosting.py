"""XGBoost trained on the cluster by `xgboost.dask`, XGBoost's own distributed
training: each worker builds the histograms of its rows and an AllReduce merges
them, so every worker grows the same trees.

The result is returned as the plain XGBoost model of the declared class and
parameters (not a Dask model), so logging, ONNX conversion, the artifact digest
and serving are those of a model fitted in one process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

DISTRIBUTED_TREE_METHODS = ("hist", "approx")
"""What `xgboost.dask` can train; `exact` has no distributed version."""


def trains_on_cluster(estimator: Any) -> bool:  # noqa: ANN401 (any estimator)
    """Whether `xgboost.dask` can train `estimator`: an `XGBClassifier` or
    `XGBRegressor` whose `tree_method` is hist or approx (unset: hist)."""
    from xgboost import XGBClassifier, XGBRegressor  # noqa: PLC0415 (optional)

    if type(estimator) not in (XGBClassifier, XGBRegressor):
        return False
    method = estimator.get_params().get("tree_method") or "hist"
    return method in DISTRIBUTED_TREE_METHODS


def fit_xgboost(
    client: Any,  # noqa: ANN401 (distributed.Client, untyped)
    estimator: Any,  # noqa: ANN401 (an XGBClassifier or XGBRegressor)
    matrix: npt.NDArray[np.float64],
    y: npt.NDArray[Any],
) -> Any:  # noqa: ANN401
    """`estimator` fitted on the workers; the plain model of its class and params.

    The rows are cut into one contiguous partition per worker (in row order),
    each placed on its worker and read there as a dask array: the workers hold
    the training rows, the driver only the trees at the end.
    """
    import dask.array as da  # noqa: PLC0415 (only on a cluster)
    from dask.delayed import delayed  # noqa: PLC0415
    from xgboost import XGBClassifier  # noqa: PLC0415
    from xgboost.dask import DaskXGBClassifier, DaskXGBRegressor  # noqa: PLC0415

    workers = sorted(client.scheduler_info()["workers"])
    parts = max(1, min(len(workers), len(matrix)))
    bounds = np.linspace(0, len(matrix), parts + 1).astype(int)
    xs, ys = [], []
    for worker, start, stop in zip(workers, bounds, bounds[1:], strict=False):
        x_part = client.scatter(matrix[start:stop], workers=[worker])
        y_part = client.scatter(y[start:stop], workers=[worker])
        rows = int(stop - start)
        xs.append(
            da.from_delayed(  # type: ignore[no-untyped-call]
                delayed(x_part),
                shape=(rows, matrix.shape[1]),
                dtype=matrix.dtype,
            )
        )
        ys.append(
            da.from_delayed(  # type: ignore[no-untyped-call]
                delayed(y_part), shape=(rows,), dtype=y.dtype
            )
        )
    params = estimator.get_params()
    dask_class = (
        DaskXGBClassifier if isinstance(estimator, XGBClassifier) else DaskXGBRegressor
    )
    fitted = dask_class(**params)
    fitted.client = client
    with client.as_current():  # xgboost.dask looks up the current client too
        fitted.fit(
            da.concatenate(xs),  # type: ignore[no-untyped-call]
            da.concatenate(ys),  # type: ignore[no-untyped-call]
        )
    plain = type(estimator)(**params)
    plain.load_model(bytearray(fitted.get_booster().save_raw("json")))
    return plain
