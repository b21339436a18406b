"""MLflow helpers: the tracking URI, the use case's experiment, run lineage tags."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlflow

from aistack.contract import RankingUseCase, UseCase

LINEAGE_TAG = "aistack.lineage"
PROFILE_ARTIFACT = "reference_profile.json"
KEY_TAG = "aistack.training_key"
ERASURE_TAG = "aistack.erasure"
"""Model-version and run tag prefix listing an erasure in a model's lineage."""


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the duration, then restore both the
    tracking and the registry URI."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def experiment_id(use_case: UseCase | RankingUseCase, artifacts: str) -> str:
    """The use case's experiment, created with artifacts under the workspace."""
    name = f"aistack-{use_case.name}"
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(mlflow.create_experiment(name, artifact_location=artifacts))


def lineage_of(run_id: str) -> dict[str, int]:
    """Input tables and versions recorded on a run."""
    tags = mlflow.get_run(run_id).data.tags
    prefix = f"{LINEAGE_TAG}."
    return {k[len(prefix) :]: int(v) for k, v in tags.items() if k.startswith(prefix)}
