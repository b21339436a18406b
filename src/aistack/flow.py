"""The stages of a run, in flow order (a light module: the CLI lists them in --help)."""

from __future__ import annotations

from typing import Literal

Stage = Literal["ingest", "silver", "gold", "train", "score"]
STAGES: tuple[Stage, ...] = ("ingest", "silver", "gold", "train", "score")
