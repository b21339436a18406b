"""The monitoring report: one self-contained HTML file whose plots really draw."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from aistack.monitoring.report import CURRENT_COLOR, REFERENCE_COLOR, render_report

ESCAPED = "amount_<b>raw</b>"
OVERLAYS = ("tx_amount", "terminal_category", ESCAPED)
METRICS = ("roc_auc", "average_precision", "card_precision_at_100")
TIMEOUT_S = 60


def report_inputs() -> dict:
    """Synthetic monitoring data: two numeric and one categorical drifted feature."""
    rng = np.random.default_rng(0)
    days = pd.date_range("2024-05-01", periods=14, freq="D")
    drift = pd.DataFrame(
        {
            "column": ["tx_amount", "terminal_category", ESCAPED, "hour", "weekday"],
            "kind": ["numeric", "categorical", "numeric", "numeric", "categorical"],
            "test": ["wasserstein", "jensen_shannon", "ks", "wasserstein", "chi2"],
            "statistic": [0.42, 0.18, 1.2e-9, 0.03, 0.61],
            "threshold": [0.1, 0.1, 0.05, 0.1, 0.05],
            "drifted": [True, True, True, False, False],
            "psi": [0.51, None, 0.33, 0.02, None],
        }
    )
    cats = np.array(["grocery", "travel", "online", "fuel", "<other>"], dtype=object)
    overlays = {
        "tx_amount": (rng.gamma(2.0, 30.0, 3000), rng.gamma(2.0, 45.0, 2500)),
        "terminal_category": (
            rng.choice(cats, 2000, p=[0.4, 0.1, 0.3, 0.15, 0.05]),
            rng.choice(cats, 1800, p=[0.25, 0.3, 0.3, 0.1, 0.05]),
        ),
        ESCAPED: (rng.normal(0, 1, 2000), rng.normal(0.8, 1.3, 2000)),
    }
    mean = 0.1 + 0.01 * np.arange(14)
    scores = pd.DataFrame(
        {
            "day": days,
            "n": rng.integers(800, 1200, 14),
            "mean": mean,
            "p10": mean - 0.08,
            "p50": mean - 0.02,
            "p90": mean + 0.2,
        }
    )
    performance = pd.DataFrame({"day": days.date})
    for i, metric in enumerate(METRICS):
        performance[metric] = 0.85 - 0.1 * i - 0.005 * np.arange(14)
    return {
        "title": "Fraud model <monitoring> & drift",
        "summary": {
            "model": "fraud-xgb",
            "version": "7",
            "reference window": "2024-04-01 to 2024-04-30",
            "current window": "2024-05-01 to 2024-05-14",
            "rows": "14,210",
        },
        "drift": drift,
        "overlays": overlays,
        "scores_by_day": scores,
        "performance": performance,
        "training_metrics": {"roc_auc": 0.88, "average_precision": 0.8},
        "consistency": pd.DataFrame(
            {
                "feature": ["customer_nb_tx_1d", "batch_only_<feature>"],
                "compared": [1200, 1200],
                "mismatch_rate": [0.0, 0.25],
                "missing_rate": [0.0, 0.01],
                "max_abs_diff": [0.0, 3.5],
            }
        ),
        "alerts": [
            {
                "rule": "psi_tx_amount",
                "state": "firing",
                "value": "0.51",
                "threshold": "0.2",
                "at": "2024-05-14T06:00Z",
            },
            {
                "rule": "roc_auc_floor",
                "state": "ok",
                "value": "0.79",
                "threshold": "0.75",
                "at": "2024-05-14T06:00Z",
            },
        ],
    }


def render(tmp_path: Path) -> Path:
    return render_report(tmp_path / "nested" / "report.html", **report_inputs())


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    path = render(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path.is_file()
    for forbidden in ("http://", "https://", "<link", "<script"):
        assert forbidden not in text
    assert re.search(r"""src\s*=\s*["']?(?!data:)""", text) is None
    assert text.count("<svg") == len(OVERLAYS) + 2
    for name in ("tx_amount", "terminal_category"):
        assert name in text
    assert "amount_&lt;b&gt;raw&lt;/b&gt;" in text
    assert "<b>" not in text
    assert "Fraud model &lt;monitoring&gt; &amp; drift" in text
    assert "3 of 5 features drifted (60%)" in text
    assert text.count('<tr class="drifted">') == 3
    assert "1.20e-09" in text
    assert text.count('<tr class="firing">') == 1
    assert "psi_tx_amount" in text and "roc_auc_floor" in text


def test_report_without_labels_says_so(tmp_path: Path) -> None:
    inputs = report_inputs() | {
        "performance": pd.DataFrame(columns=["day"]),
        "alerts": (),
    }
    text = render_report(tmp_path / "r.html", **inputs).read_text(encoding="utf-8")
    assert "No labelled data yet" in text
    assert text.count("<svg") == len(OVERLAYS) + 1
    assert "<h2>Alerts</h2>" not in text


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with no network side traffic and a private profile."""
    exe = shutil.which("chromium")
    assert exe is not None
    command = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def has_colour(pixels: np.ndarray, hex_colour: str, tolerance: float = 0.06) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).max(axis=-1) < tolerance).sum())


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless browser check needs Debian's `chromium` on PATH",
)
def test_report_draws_in_a_real_browser(tmp_path: Path) -> None:
    path = render(tmp_path)
    png = tmp_path / "report.png"
    shot = chromium(
        tmp_path,
        "--window-size=1280,4000",
        "--hide-scrollbars",
        f"--screenshot={png}",
        path.resolve().as_uri(),
    )
    assert png.is_file(), shot.stderr[-2000:]
    pixels = image.imread(str(png))[..., :3]
    assert pixels.shape[:2] == (4000, 1280)
    inked = (pixels.min(axis=-1) < 0.85).sum()
    assert inked > 50_000, f"only {inked} non-white pixels"
    assert has_colour(pixels, REFERENCE_COLOR) > 2_000
    assert has_colour(pixels, CURRENT_COLOR) > 2_000

    dom = chromium(tmp_path, "--dump-dom", path.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    svgs = re.findall(r"<svg\b.*?</svg>", dom.stdout, flags=re.DOTALL)
    assert len(svgs) == len(OVERLAYS) + 2
    assert all("<path" in svg for svg in svgs)
    assert "amount_&lt;b&gt;raw&lt;/b&gt;" in dom.stdout
    assert "Online/offline consistency" in dom.stdout
    assert re.search(r'<tr class="mismatch"><td>batch_only_&lt;feature&gt;', dom.stdout)
