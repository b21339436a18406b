"""A/B analysis of a declared business metric between two arms.

Proportions: two-proportion z-test (pooled standard error for the p-value,
unpooled for the confidence interval). Means: Welch's t-test and its confidence
interval for the difference (`scipy.stats.ttest_ind`, unequal variances). Sample
sizes per arm for the declared minimum detectable effect at the given power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ABResult:
    """Arm B minus arm A on one metric, with its uncertainty."""

    metric: str
    test: str
    n_a: int
    value_a: float
    n_b: int
    value_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    required_per_arm: int
    alpha: float

    @property
    def significant(self) -> bool:
        """Whether the difference is significant at `alpha`."""
        return self.p_value < self.alpha

    @property
    def enough_data(self) -> bool:
        """Whether both arms reached the sample size for the declared effect."""
        return min(self.n_a, self.n_b) >= self.required_per_arm


def two_proportions(
    x_a: int, n_a: int, x_b: int, n_b: int, *, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """(difference, ci_low, ci_high, p_value) of p_b - p_a."""
    p_a, p_b = x_a / n_a, x_b / n_b
    diff = p_b - p_a
    pooled = (x_a + x_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = diff / se_pooled if se_pooled > 0 else 0.0
    p_value = float(2 * stats.norm.sf(abs(z)))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    half = float(stats.norm.ppf(1 - alpha / 2)) * se
    return diff, diff - half, diff + half, p_value


def welch_means(
    a: FloatArray, b: FloatArray, *, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """(difference, ci_low, ci_high, p_value) of mean(b) - mean(a): Welch's t-test."""
    result = stats.ttest_ind(b, a, equal_var=False)
    interval = result.confidence_interval(confidence_level=1 - alpha)
    diff = float(b.mean() - a.mean())
    return diff, float(interval.low), float(interval.high), float(result.pvalue)


def sample_size_proportions(
    baseline: float, effect: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Rows per arm to detect `baseline` -> `baseline + effect` (two-sided)."""
    p1, p2 = baseline, min(max(baseline + effect, 1e-9), 1 - 1e-9)
    z_a, z_b = float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))
    mean = (p1 + p2) / 2
    top = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil(top**2 / (p2 - p1) ** 2)


def sample_size_means(
    std: float, effect: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Rows per arm to detect a mean difference of `effect` given `std`."""
    z_a, z_b = float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))
    return math.ceil(2 * ((z_a + z_b) * std / effect) ** 2)


def compare(
    metric: str,
    kind: str,
    a: FloatArray,
    b: FloatArray,
    *,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> ABResult:
    """Compare outcomes of arm A (champion) and arm B (challenger)."""
    if a.size == 0 or b.size == 0:
        nan = float("nan")
        return ABResult(
            metric, kind, a.size, nan, b.size, nan, nan, nan, nan, nan, 0, alpha
        )
    if kind == "proportion":
        x_a, x_b = int(a.sum()), int(b.sum())
        diff, low, high, p = two_proportions(x_a, a.size, x_b, b.size, alpha=alpha)
        needed = sample_size_proportions(
            float(a.mean()), effect, alpha=alpha, power=power
        )
        test = "two-proportion z-test"
    else:
        diff, low, high, p = welch_means(a, b, alpha=alpha)
        std = float(np.std(np.concatenate([a, b]))) or 1.0
        needed = sample_size_means(std, effect, alpha=alpha, power=power)
        test = "Welch's t-test (mean difference)"
    return ABResult(
        metric,
        test,
        a.size,
        float(a.mean()),
        b.size,
        float(b.mean()),
        diff,
        low,
        high,
        p,
        needed,
        alpha,
    )
