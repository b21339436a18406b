"""Reference profiles: quantile bins of the training data, and PSI against them.

Logged with every trained model so a server measures drift at line rate
(`StreamingHistograms`) without rebuilding the training set.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_EPS = 1e-4


def psi(reference: FloatArray, current: FloatArray, *, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = reference_edges(reference, bins)
    ref = bin_shares(reference, edges)
    cur = bin_shares(current, edges)
    return psi_from_shares(ref, cur)


def reference_edges(reference: FloatArray, bins: int) -> FloatArray:
    """Inner bin edges at the reference's quantiles (duplicates removed)."""
    finite = reference[np.isfinite(reference)]
    if finite.size == 0:
        return np.array([], dtype=np.float64)
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: FloatArray, edges: FloatArray) -> FloatArray:
    """Share of finite values in each bin defined by inner `edges`."""
    finite = values[np.isfinite(values)]
    counts = np.bincount(
        np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1
    )
    return counts / max(finite.size, 1)


def psi_from_shares(reference: FloatArray, current: FloatArray) -> float:
    """PSI of two share vectors over the same bins (empty bins smoothed)."""
    ref = np.clip(reference, _EPS, None)
    cur = np.clip(current, _EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def reference_profile(
    columns: Mapping[str, npt.ArrayLike], *, bins: int = 10
) -> dict[str, dict[str, list[float]]]:
    """Quantile bin edges and shares per column: what in-server drift compares to.

    Logged with each trained model (`reference_profile.json`), so a server has
    its reference without rebuilding the training set.
    """
    profile = {}
    for name, values in columns.items():
        data = np.sort(np.asarray(values, dtype=np.float64))
        data = data[np.isfinite(data)]
        if data.size == 0:
            continue
        edges = reference_edges(data, bins)
        profile[name] = {
            "edges": edges.tolist(),
            "shares": bin_shares(data, edges).tolist(),
        }
    return profile


class StreamingHistograms:
    """Counts of served values in the reference bins, for PSI at line rate.

    Rows are buffered and folded in by one vectorised comparison against every
    column's edges per `fold_rows` (a single-row request would otherwise pay the
    whole fold); `counts` and `psi()` fold what is pending first. Thread-safe.
    """

    fold_rows = 256

    def __init__(
        self, profile: Mapping[str, Mapping[str, Sequence[float]]], names: Sequence[str]
    ) -> None:
        self.names = [n for n in names if n in profile]
        width = max((len(profile[n]["edges"]) for n in self.names), default=0)
        self.edges = np.full((len(self.names), width), np.inf)
        self.reference = np.zeros((len(self.names), width + 1))
        for i, name in enumerate(self.names):
            edges = profile[name]["edges"]
            self.edges[i, : len(edges)] = edges
            self.reference[i, : len(edges) + 1] = profile[name]["shares"]
        self._counts = np.zeros_like(self.reference, dtype=np.int64)
        self._rows = np.arange(len(self.names))
        self._pending: list[FloatArray] = []
        self._pending_rows = 0
        self._lock = threading.Lock()

    def observe(self, values: FloatArray) -> None:
        """Add rows (n x len(names), same column order) to the counts."""
        if not self.names or not len(values):
            return
        with self._lock:
            self._pending.append(values)
            self._pending_rows += len(values)
            if self._pending_rows >= self.fold_rows:
                self._fold()

    @property
    def counts(self) -> np.ndarray:
        """Observations per column and bin, pending rows included."""
        with self._lock:
            self._fold()
            return self._counts

    def _fold(self) -> None:
        if not self._pending:
            return
        values = np.concatenate(self._pending)
        self._pending, self._pending_rows = [], 0
        bins = (values[:, :, None] >= self.edges[None, :, :]).sum(axis=2)
        finite = np.isfinite(values)
        rows = np.broadcast_to(self._rows, bins.shape)  # one add for all rows
        np.add.at(self._counts, (rows[finite], bins[finite]), 1)

    def psi(self, *, min_count: int = 100) -> dict[str, float]:
        """PSI per column with at least `min_count` observations."""
        result = {}
        counts = self.counts
        totals = counts.sum(axis=1)
        for i, name in enumerate(self.names):
            if totals[i] >= min_count:
                shares = counts[i] / totals[i]
                width = int(np.count_nonzero(np.isfinite(self.edges[i]))) + 1
                result[name] = psi_from_shares(
                    self.reference[i, :width], shares[:width]
                )
        return result
