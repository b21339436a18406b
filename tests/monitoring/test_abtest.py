"""A/B statistics: intervals, p-values and sample sizes on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from aistack.monitoring.abtest import (
    compare,
    sample_size_means,
    sample_size_proportions,
    two_proportions,
    welch_means,
)


def test_two_proportions_against_the_formula() -> None:
    diff, low, high, p = two_proportions(100, 1000, 130, 1000)
    assert diff == pytest.approx(0.03)
    pooled = 230 / 2000
    z = 0.03 / np.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert p == pytest.approx(2 * stats.norm.sf(z))
    assert low < 0.03 < high
    assert p < 0.05


def test_sample_sizes() -> None:
    assert sample_size_proportions(0.10, 0.02) == 3841  # the textbook value
    assert sample_size_means(1.0, 0.2) == 393


def test_compare_finds_a_real_difference_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random(5000) < 0.20).astype(float)
    b = (rng.random(5000) < 0.25).astype(float)
    real = compare("caught", "proportion", a, b, effect=0.05)
    assert real.significant and real.ci_low < 0.05 < real.ci_high
    nulls = [
        compare(
            "caught",
            "proportion",
            (rng.random(2000) < 0.2).astype(float),
            (rng.random(2000) < 0.2).astype(float),
            effect=0.05,
        ).significant
        for _ in range(300)
    ]
    assert 0.02 <= np.mean(nulls) <= 0.09  # alpha = 0.05: false positives ~5 %
    means = compare(
        "amount", "mean", rng.normal(10, 2, 800), rng.normal(10.5, 2, 800), effect=0.5
    )
    assert means.test.startswith("Welch") and means.significant
    assert means.ci_low < 0.5 < means.ci_high


def test_welch_against_the_formula() -> None:
    """A small case by hand: Welch's t, Welch-Satterthwaite degrees of freedom."""
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    diff, low, high, p = welch_means(a, b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size  # 5/12, 2
    se = np.sqrt(va + vb)
    t = (6.0 - 2.5) / se
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    assert diff == pytest.approx(3.5)
    assert p == pytest.approx(2 * stats.t.sf(t, df))
    half = stats.t.ppf(0.975, df) * se
    assert (low, high) == pytest.approx((3.5 - half, 3.5 + half))
