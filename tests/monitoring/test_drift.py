"""Drift statistics against scipy's own, and how often they cry wolf."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from aistack.contract import DriftSettings
from aistack.monitoring.drift import detect_drift, wasserstein_sorted
from aistack.training.profile import StreamingHistograms, psi, reference_profile

RNG = np.random.default_rng(0)


def test_statistics_match_scipy() -> None:
    small_ref, small_cur = RNG.normal(0, 1, 400), RNG.normal(0.3, 1, 300)
    big_ref, big_cur = RNG.normal(0, 1, 20_000), RNG.normal(0.1, 1.3, 15_000)
    cats = list("abcd")
    cat_ref = RNG.choice(cats, 600, p=[0.4, 0.3, 0.2, 0.1])
    cat_cur = RNG.choice(cats, 500, p=[0.25, 0.25, 0.25, 0.25])
    big_cat_ref = RNG.choice(cats, 5000, p=[0.4, 0.3, 0.2, 0.1])
    big_cat_cur = RNG.choice(cats, 5000)
    ref = pd.DataFrame({"x": small_ref, "c": cat_ref[:400]})
    cur = pd.DataFrame({"x": small_cur, "c": cat_cur[:300]})
    ks, chi = detect_drift(ref, cur)
    assert ks.test == "ks"
    assert ks.statistic == pytest.approx(stats.ks_2samp(small_ref, small_cur).pvalue)
    assert chi.test == "chi2"
    r_counts = pd.Series(cat_ref[:400]).value_counts().reindex(cats, fill_value=0)
    c_counts = pd.Series(cat_cur[:300]).value_counts().reindex(cats, fill_value=0)
    expected = r_counts / r_counts.sum() * c_counts.sum()
    assert chi.statistic == pytest.approx(stats.chisquare(c_counts, expected).pvalue)
    big = detect_drift(
        pd.DataFrame({"x": big_ref, "c": big_cat_ref[:20_000].repeat(4)[:20_000]}),
        pd.DataFrame({"x": big_cur, "c": big_cat_cur.repeat(3)}),
    )
    assert big[0].test == "wasserstein"
    exact = stats.wasserstein_distance(big_ref, big_cur) / np.std(big_ref)
    assert big[0].statistic == pytest.approx(exact, rel=1e-3)
    assert big[1].test == "jensen_shannon"
    r = pd.Series(big_cat_ref[:20_000].repeat(4)[:20_000]).value_counts().reindex(cats)
    c = pd.Series(big_cat_cur.repeat(3)).value_counts().reindex(cats)
    assert big[1].statistic == pytest.approx(jensenshannon(r / r.sum(), c / c.sum()))
    a, b = np.sort(big_ref), np.sort(big_cur)
    assert wasserstein_sorted(a, b) == pytest.approx(
        stats.wasserstein_distance(a, b), rel=1e-3
    )


def test_same_distribution_is_quiet_and_a_shift_is_caught() -> None:
    ref = pd.DataFrame(
        {"n": RNG.normal(0, 1, 50_000), "c": RNG.choice(list("xyz"), 50_000)}
    )
    same = pd.DataFrame(
        {"n": RNG.normal(0, 1, 50_000), "c": RNG.choice(list("xyz"), 50_000)}
    )
    moved = pd.DataFrame(
        {
            "n": RNG.normal(0.5, 1, 50_000),
            "c": RNG.choice(list("xyz"), 50_000, p=[0.6, 0.2, 0.2]),
        }
    )
    assert not any(d.drifted for d in detect_drift(ref, same))
    assert all(d.drifted for d in detect_drift(ref, moved))


@pytest.mark.parametrize(("rows", "limit"), [(500, 0.12), (20_000, 0.0)])
def test_false_alarm_rate(rows: int, limit: float) -> None:
    """KS at p<0.05 should alarm ~5% of the time; Wasserstein 0.1 almost never."""
    rng = np.random.default_rng(1)
    alarms = 0
    trials = 100
    for _ in range(trials):
        ref = pd.DataFrame({"x": rng.lognormal(0, 1, rows)})
        cur = pd.DataFrame({"x": rng.lognormal(0, 1, rows)})
        alarms += detect_drift(ref, cur)[0].drifted
    assert alarms / trials <= limit


def test_numeric_columns_with_few_values_are_categorical() -> None:
    ref = pd.DataFrame({"flag": RNG.integers(0, 2, 5000).astype(float)})
    cur = pd.DataFrame({"flag": RNG.integers(0, 2, 5000).astype(float)})
    result = detect_drift(ref, cur, settings=DriftSettings())[0]
    assert (result.kind, result.test) == ("categorical", "jensen_shannon")


def test_streaming_histograms_give_the_batch_psi() -> None:
    ref = {"a": RNG.normal(0, 1, 5000), "b": RNG.exponential(1, 5000)}
    profile = reference_profile(ref)
    live = StreamingHistograms(profile, ["a", "b"])
    cur = np.column_stack([RNG.normal(0.4, 1, 3000), RNG.exponential(1, 3000)])
    for row in cur[:1000]:
        live.observe(row[None, :])
    live.observe(cur[1000:])
    got = live.psi()
    assert got["a"] == pytest.approx(psi(ref["a"], cur[:, 0]))
    assert got["b"] == pytest.approx(psi(ref["b"], cur[:, 1]))
    assert got["a"] > 0.1 > got["b"]


def test_infinities_are_ignored_and_new_categories_are_drift() -> None:
    base = RNG.normal(0, 1, 2000)
    with_inf = base.copy()
    with_inf[7] = np.inf
    verdict = detect_drift(pd.DataFrame({"x": base}), pd.DataFrame({"x": with_inf}))[0]
    assert not verdict.drifted and np.isfinite(verdict.statistic)
    ref = pd.DataFrame({"c": RNG.choice(list("abc"), 500)})
    cur = pd.DataFrame({"c": [*RNG.choice(list("abc"), 495), *["new"] * 5]})
    assert detect_drift(ref, cur)[0].drifted


def test_a_handful_of_rows_is_not_enough_data_not_drift() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {"x": rng.normal(0, 1, 5000), "c": rng.integers(0, 3, 5000)}
    )
    current = pd.DataFrame({"x": rng.normal(5, 1, 7), "c": [7] * 7})  # wildly off
    verdicts = detect_drift(reference, current)
    assert [v.test for v in verdicts] == ["not_enough_data"] * 2
    assert not any(v.drifted for v in verdicts)
    assert verdicts[0].statistic == 7 and verdicts[0].score_name == "rows"
    enough = detect_drift(reference, pd.concat([current] * 20, ignore_index=True))
    assert all(v.drifted for v in enough)  # the same shift, with rows enough to tell
