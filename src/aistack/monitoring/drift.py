"""Drift statistics between a reference and a current sample, per column.

The default test depends on the column's kind and the reference size, as in
Evidently's data-drift preset, so decisions are comparable:

| kind        | reference rows <= small_sample | larger                          |
|-------------|--------------------------------|---------------------------------|
| numeric     | KS test, p < ks_pvalue         | Wasserstein/std(ref) >= wasserstein |
| categorical | chi-squared, p < chi2_pvalue   | Jensen-Shannon >= jensen_shannon |

A numeric column with at most `max_categories_numeric` distinct values is tested
as categorical. PSI over reference deciles is reported for every numeric column
(and drives the in-server gauges). Columns are computed in parallel threads
(numpy sorts release the GIL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from aistack.contract.drift import DriftSettings
from aistack.training.profile import psi_from_shares

Kind = Literal["numeric", "categorical"]
Test = Literal["ks", "chi2", "wasserstein", "jensen_shannon", "not_enough_data"]
FloatArray = npt.NDArray[np.float64]
_EPS = 1e-4
_PROBE_ROWS = 10_000


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: which test, its statistic and threshold, drifted or not."""

    column: str
    kind: Kind
    test: Test
    statistic: float
    threshold: float
    drifted: bool
    psi: float | None

    @property
    def score_name(self) -> str:
        """`p-value` for KS and chi-squared tests, `rows` when there were too few
        to test, `distance` otherwise."""
        if self.test == "not_enough_data":
            return "rows"
        return "p-value" if self.test in ("ks", "chi2") else "distance"


def column_kind(values: pd.Series, settings: DriftSettings) -> Kind:
    """Numeric unless the dtype is not numeric or it has few distinct values."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "categorical"
    limit = settings.max_categories_numeric
    head = values.iloc[:_PROBE_ROWS]
    if head.nunique(dropna=True) > limit:  # exact: more in a slice means more overall
        return "numeric"
    return "categorical" if values.nunique(dropna=True) <= limit else "numeric"


def default_test(kind: Kind, n_reference: int, settings: DriftSettings) -> Test:
    """The test used for a column of `kind` with `n_reference` reference rows."""
    small = n_reference <= settings.small_sample
    if kind == "numeric":
        return "ks" if small else "wasserstein"
    return "chi2" if small else "jensen_shannon"


def _categorical(ref: pd.Series, cur: pd.Series) -> tuple[FloatArray, FloatArray]:
    ref_counts = ref.value_counts(dropna=True)
    cur_counts = cur.value_counts(dropna=True)
    keys = ref_counts.index.union(cur_counts.index)
    ref_array = ref_counts.reindex(keys, fill_value=0).to_numpy(np.float64)
    cur_array = cur_counts.reindex(keys, fill_value=0).to_numpy(np.float64)
    return ref_array.astype(np.float64), cur_array.astype(np.float64)


def wasserstein_sorted(a: FloatArray, b: FloatArray) -> float:
    """W1 distance of two sorted samples from their quantile functions.

    W1 = integral over u of |Qa(u) - Qb(u)|, evaluated at max(len) midpoints:
    exact for equal sizes, within O(1/n) of scipy's value otherwise.
    """
    m = max(a.size, b.size)
    u = (np.arange(m) + 0.5) / m
    qa = a[np.minimum((u * a.size).astype(np.int64), a.size - 1)]
    qb = b[np.minimum((u * b.size).astype(np.int64), b.size - 1)]
    return float(np.mean(np.abs(qa - qb)))


def psi_sorted(a: FloatArray, b: FloatArray, bins: int) -> float:
    """PSI over the reference's quantile bins, from two sorted samples."""
    positions = (np.linspace(0, 1, bins + 1)[1:-1] * (a.size - 1)).astype(np.int64)
    edges = np.unique(a[positions])
    ref = np.diff(np.searchsorted(a, edges, side="right"), prepend=0, append=a.size)
    cur = np.diff(np.searchsorted(b, edges, side="right"), prepend=0, append=b.size)
    return psi_from_shares(ref / a.size, cur / b.size)


def _test(
    name: str, ref: pd.Series, cur: pd.Series, kind: Kind, s: DriftSettings
) -> ColumnDrift:
    ref_values, cur_values = ref.dropna(), cur.dropna()
    if len(cur_values) < s.min_current_rows:
        return ColumnDrift(
            name,
            kind,
            "not_enough_data",
            float(len(cur_values)),
            float(s.min_current_rows),
            False,
            None,
        )
    test = default_test(kind, len(ref_values), s)
    column_psi = None
    if kind == "numeric":
        r = ref_values.to_numpy(np.float64)
        c = cur_values.to_numpy(np.float64)
        r, c = np.sort(r[np.isfinite(r)]), np.sort(c[np.isfinite(c)])
        column_psi = psi_sorted(r, c, s.bins) if len(r) and len(c) else None
        if test == "ks":
            value = float(stats.ks_2samp(r, c).pvalue)
            return ColumnDrift(
                name, kind, test, value, s.ks_pvalue, value < s.ks_pvalue, column_psi
            )
        spread = float(np.std(r))
        distance = wasserstein_sorted(r, c) / (spread if spread > 0 else 1.0)
        return ColumnDrift(
            name,
            kind,
            test,
            distance,
            s.wasserstein,
            distance >= s.wasserstein,
            column_psi,
        )
    ref_counts, cur_counts = _categorical(ref_values, cur_values)
    if test == "chi2":
        expected = ref_counts / ref_counts.sum() * cur_counts.sum()
        keep = expected > 0
        if np.any(cur_counts[~keep] > 0):
            value = 0.0  # a category the reference never saw: drift (as Evidently)
        else:
            value = float(
                stats.chisquare(
                    cur_counts[keep],
                    expected[keep] * cur_counts[keep].sum() / expected[keep].sum(),
                ).pvalue
            )
        return ColumnDrift(
            name, kind, test, value, s.chi2_pvalue, value < s.chi2_pvalue, None
        )
    distance = float(
        jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())
    )
    return ColumnDrift(
        name, kind, test, distance, s.jensen_shannon, distance >= s.jensen_shannon, None
    )


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    settings: DriftSettings | None = None,
    columns: Sequence[str] | None = None,
    kinds: Mapping[str, Kind] | None = None,
) -> list[ColumnDrift]:
    """One verdict per column (all shared columns by default), in column order."""
    s = settings or DriftSettings()
    names = (
        list(columns)
        if columns is not None
        else [c for c in reference.columns if c in current.columns]
    )
    given = dict(kinds or {})
    jobs = [
        (name, given.get(name) or column_kind(reference[name], s)) for name in names
    ]
    with ThreadPoolExecutor(max_workers=s.threads) as pool:
        return list(
            pool.map(
                lambda job: _test(
                    job[0], reference[job[0]], current[job[0]], job[1], s
                ),
                jobs,
            )
        )


def drift_frame(results: Sequence[ColumnDrift]) -> pd.DataFrame:
    """The verdicts as a table (one row per column)."""
    return pd.DataFrame(
        [
            {
                "column": r.column,
                "kind": r.kind,
                "test": r.test,
                "statistic": r.statistic,
                "threshold": r.threshold,
                "drifted": r.drifted,
                "psi": r.psi,
            }
            for r in results
        ]
    )
