"""Generic metrics against hand-computed cases."""

from __future__ import annotations

import pandas as pd
import pytest

from aistack.training.metrics import calibration_error


def test_calibration_error_bins_scores_by_tenths_of_zero_to_one() -> None:
    # bins (0, 0.1], (0.1, 0.2], ..., a score of 0 in the first; an edge value
    # (0.2) belongs to the bin it closes
    frame = pd.DataFrame(
        {
            "score": [0.0, 0.05, 0.2, 0.15, 0.9, 0.95, 0.92],
            "label": [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        }
    )
    # (0, 0.1]:   scores 0, 0.05    mean 0.025,  labels 0, 1  rate 0.5  |gap| 0.475
    # (0.1, 0.2]: scores 0.2, 0.15  mean 0.175,  labels 0, 0  rate 0    |gap| 0.175
    # (0.8, 0.9]: score 0.9         mean 0.9,    label 1      rate 1    |gap| 0.1
    # (0.9, 1]:   scores 0.95, 0.92 mean 0.935,  labels 1, 0  rate 0.5  |gap| 0.435
    expected = (2 * 0.475 + 2 * 0.175 + 1 * 0.1 + 2 * 0.435) / 7
    assert calibration_error(frame) == pytest.approx(expected, rel=1e-12)


def test_calibration_error_bins_are_fixed_tenths_not_the_scores_own_range() -> None:
    # scores only in 0.3-0.4: ten bins over the scores' own range would split
    # them; fixed tenths keep them in one bin whose rate matches its mean
    frame = pd.DataFrame(
        {"score": [0.31, 0.39, 0.35, 0.35], "label": [0.0, 1.0, 0.0, 1.0]}
    )
    assert calibration_error(frame) == pytest.approx(abs(0.35 - 0.5), rel=1e-12)
