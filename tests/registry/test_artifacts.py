"""A model artifact is unpickled only when it is what was registered."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from aistack.errors import RegistryError
from aistack.registry.artifacts import DIGEST_TAG, load_model
from aistack.runner import run
from aistack.serving.batch import score_range
from aistack.training.tracking import tracking
from cancer_usecase import cancer_use_case
from conftest import make_workspace


def test_a_changed_artifact_is_refused_and_an_intact_one_loads(tmp_path: Path) -> None:
    uc = cancer_use_case()
    ws = make_workspace(tmp_path / "ws")
    report = run(uc, ws, uc.params(), stages=("ingest", "silver", "gold", "train"))
    assert report.champion is not None
    version = report.champion.version
    with tracking(ws.settings.mlflow_uri):
        tags = ws.registry.client.get_model_version(uc.name, str(version)).tags
        assert len(tags[DIGEST_TAG]) == 64
        model = load_model(ws.registry, uc.name, "champion")
        assert model.predict is not None
        pickles = list(ws.settings.artifacts_dir.rglob("model.pkl"))
        assert pickles
        for path in pickles:  # what an attacker with write access to the store does
            path.write_bytes(path.read_bytes() + b"\n")
        with pytest.raises(RegistryError, match=r"digest .* differs"):
            load_model(ws.registry, uc.name, version)
        with pytest.raises(RegistryError, match="refusing to load"):
            score_range(
                ws.lake,
                uc,
                ws.registry,
                start=datetime(2024, 1, 1),
                end=datetime(2025, 1, 1),
            )
        ws.registry.client.delete_model_version_tag(uc.name, str(version), DIGEST_TAG)
        with pytest.raises(RegistryError, match="no recorded artifact digest"):
            load_model(ws.registry, uc.name, version)
