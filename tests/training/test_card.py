"""Model cards: every section from the run's records, drawn in a real browser."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from aistack.contract import get_use_case
from aistack.errors import RegistryError
from aistack.training.card import write_model_card
from monitoring.test_report import chromium


def test_training_writes_a_card_per_model_with_every_section(patient_run) -> None:
    _, report = patient_run
    assert len(report.model_cards) == len(report.candidates) == 2
    text = report.model_cards[0].read_text(encoding="utf-8")
    for heading in (
        "Intended use",
        "Data lineage",
        "Metrics (test rows)",
        "Metrics per slice",
        "Gaps between groups",
        "Calibration",
        "Gates",
    ):
        assert heading in text, heading
    assert "silver.patients" in text
    for group in ("&lt;60", "60-69", "70-79", "80+", "<td>F</td>", "<td>M</td>"):
        assert group in text, group
    assert "invariant_national_id" in text and "monotonic_age" in text
    assert "http" not in text.replace("http://www.w3.org", "")  # self-contained


def test_an_unknown_version_is_an_error_naming_the_option(patient_run, tmp_path):
    ws, _ = patient_run
    uc = get_use_case("patient_risk")
    with pytest.raises(RegistryError, match="--version: patient_risk has no model"):
        write_model_card(ws.registry.client, uc, 99, tmp_path / "card.html")


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless browser check needs Debian's `chromium` on PATH",
)
def test_card_renders_with_its_calibration_plot(patient_run, tmp_path: Path) -> None:
    ws, report = patient_run
    uc = get_use_case("patient_risk")
    path = write_model_card(
        ws.registry.client, uc, report.candidates[1].version, tmp_path / "card.html"
    )
    dom = chromium(tmp_path, "--dump-dom", path.resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    svgs = re.findall(r"<svg\b.*?</svg>", dom.stdout, flags=re.DOTALL)
    assert len(svgs) == 1 and "<path" in svgs[0]
    assert "mean predicted probability" in svgs[0]
    assert "TPR gap" in dom.stdout
