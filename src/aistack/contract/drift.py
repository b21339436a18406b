"""How drift is tested per column (defaults as Evidently's data-drift preset)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds and sizes of the drift tests (a use case may override them).

    Below `min_current_rows` current values a column is reported "not enough
    data" (never drifted): a handful of rows decides nothing.
    """

    small_sample: int = 1000
    min_current_rows: int = 100
    ks_pvalue: float = 0.05
    chi2_pvalue: float = 0.05
    wasserstein: float = 0.1
    jensen_shannon: float = 0.1
    psi: float = 0.2
    bins: int = 10
    max_categories_numeric: int = 5
    threads: int = 2
