"""Fit, evaluate, gate and register one model per trainer; choose the champion.

Each trainer is one MLflow run with params, test metrics, gate results, a
signature, explicit pip requirements and the lineage of every input table. A
training key makes a re-run on the same inputs train nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, packages_distributions
from importlib.metadata import version as package_version
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from aistack.contract import RankingUseCase, Trainer, UseCase
from aistack.contract.model import greater_is_better
from aistack.engine import Engine
from aistack.features.derived import transform_fingerprint
from aistack.registry.aliases import Registry
from aistack.registry.artifacts import load_model, record_digest
from aistack.training.gates import GateResult, check_gates
from aistack.training.metrics import PROBA_PREFIX
from aistack.training.models import Scorer, ScoringModel
from aistack.training.profile import reference_profile
from aistack.training.sets import TrainingSet, resampled
from aistack.training.tracking import KEY_TAG, LINEAGE_TAG, PROFILE_ARTIFACT

BASE_REQUIREMENTS = ("aistack", "scikit-learn", "pandas", "numpy", "cloudpickle")
"""What every logged model needs: the wrapper is aistack's `ScoringModel`."""


@dataclass
class Candidate:
    """One trained model version and its verdict."""

    trainer: str
    run_id: str
    version: int
    metrics: dict[str, float]
    gates: list[GateResult] = field(default_factory=list)
    reused: bool = False
    test_scores: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """Whether every gate passed."""
        return all(g.passed for g in self.gates)


def scored_frame(model: Scorer, frame: pd.DataFrame, use_case: UseCase) -> pd.DataFrame:
    """`frame` with `label`, `score` and, for a multiclass model, `proba_<class>`."""
    inputs = frame[use_case.model_inputs]
    scored = frame.assign(
        label=frame[use_case.labels.label].to_numpy(), score=model.predict(inputs)
    )
    if use_case.task == "multiclass" and isinstance(model, ScoringModel):
        proba = model.predict_proba(inputs)
        for j, c in enumerate(model.classes):
            scored[f"{PROBA_PREFIX}{c:g}"] = proba[:, j]
    return scored


def evaluate(model: Scorer, frame: pd.DataFrame, use_case: UseCase) -> dict[str, float]:
    """Every declared metric of `model` on `frame`."""
    scored = scored_frame(model, frame, use_case)
    return {name: float(metric(scored)) for name, metric in use_case.metrics.items()}


def interval_metrics(
    model: ScoringModel, frame: pd.DataFrame, use_case: UseCase
) -> dict[str, float]:
    """Share of `frame`'s values inside their interval and its mean width (none
    for a model without intervals)."""
    bounds = model.predict_interval(frame[use_case.model_inputs])
    if bounds is None or not len(frame):
        return {}
    y = frame[use_case.labels.label].to_numpy(dtype=np.float64)
    inside = (bounds[:, 0] <= y) & (y <= bounds[:, 1])
    return {
        "interval_coverage": float(inside.mean()),
        "interval_mean_width": float(np.mean(bounds[:, 1] - bounds[:, 0])),
    }


def training_key(
    use_case: UseCase, trainer: Trainer, lineage: dict[str, int], seed: int
) -> str:
    """Identity of a training: same key, same model (so it is not trained again).

    It holds the inputs' versions, the seed and split, the estimator's
    hyperparameters and a fingerprint of the trainer's code, so changing
    `n_estimators` (or the build function) trains again instead of reusing.
    """
    payload = {
        "use_case": use_case.name,
        "trainer": trainer.name,
        "inputs": list(trainer.inputs),
        "lineage": lineage,
        "seed": seed,
        "split": use_case.split.record(),
        "evaluation": use_case.evaluation.record(),
        "task": use_case.task,
        "hyperparameters": hyperparameters(trainer, seed),
        "interval": trainer.interval,
        "resampling": repr(trainer.resampling),
        "code": code_fingerprint(trainer),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # object ids differ between processes


def hyperparameters(trainer: Trainer, seed: int) -> dict[str, str]:
    """The unfitted estimator's parameters (`get_params`), as text."""
    estimator = trainer.model(seed)
    get_params = getattr(estimator, "get_params", None)
    params = get_params(deep=True) if callable(get_params) else vars(estimator)
    return {str(k): _ADDRESS.sub("", repr(v)) for k, v in sorted(params.items())}


def code_fingerprint(trainer: Trainer) -> str:
    """SHA-256 of the trainer's build function source (its qualified name if none)."""
    return transform_fingerprint(trainer.build)


def existing_candidate(
    experiment: str, key: str, use_case: UseCase | RankingUseCase
) -> Candidate | None:
    """The registered candidate an earlier run with the same training key produced."""
    runs = mlflow.search_runs(
        [experiment], filter_string=f"tags.`{KEY_TAG}` = '{key}'", output_format="list"
    )
    for found in runs:
        versions = mlflow.tracking.MlflowClient().search_model_versions(
            f"name = '{use_case.name}' and run_id = '{found.info.run_id}'"
        )
        if not versions:
            continue
        tags = found.data.tags
        gates = [
            GateResult(
                name[len("gate.") :], value.startswith("pass"), value.split(": ", 1)[-1]
            )
            for name, value in tags.items()
            if name.startswith("gate.")
        ]
        return Candidate(
            tags.get("mlflow.runName", ""),
            found.info.run_id,
            int(versions[0].version),
            dict(found.data.metrics),
            gates,
            reused=True,
        )
    return None


def requirements(trainer: Trainer, estimator: object) -> list[str]:
    """Pinned pip requirements of one model: aistack's own, the trainer's declared
    packages, and the installed distribution of the model's class (e.g.
    `xgboost-cpu` for an XGBClassifier), nothing else."""
    names = [*BASE_REQUIREMENTS, *trainer.requirements]
    top = type(estimator).__module__.split(".")[0]
    names += packages_distributions().get(top, [])
    out = {}
    for name in names:
        bare = re.split(r"[<>=!~ \[]", name, maxsplit=1)[0]
        try:
            out[bare.lower()] = f"{bare}=={package_version(bare)}"
        except PackageNotFoundError:
            out[bare.lower()] = name  # not installed here: as declared
    return sorted(out.values())


def _params(
    use_case: UseCase,
    trainer: Trainer,
    model: ScoringModel,
    data: TrainingSet,
    *,
    seed: int,
) -> dict[str, Any]:
    estimator = {
        f"est.{k}": v
        for k, v in model.estimator.get_params().items()
        if isinstance(v, (int, float, str, bool)) or v is None
    }
    return {
        "trainer": trainer.name,
        "estimator": type(model.estimator).__name__,
        "supervised": trainer.supervised,
        "n_features": len(model.features),
        "task": use_case.task,
        "train_rows": len(data.train),
        "test_rows": len(data.test),
        **data.periods,
        **{f"split.{k}": v for k, v in data.split.items()},
        **{f"tuned.{k}": v for k, v in trainer.params.items()},
        **({"interval.coverage": trainer.interval} if trainer.interval else {}),
        **_resampling_params(trainer, data, use_case, seed),
        **dict(list(estimator.items())[:60]),
    }


def _resampling_params(
    trainer: Trainer, data: TrainingSet, use_case: UseCase, seed: int
) -> dict[str, Any]:
    """What resampling did to the training rows (none declared: nothing)."""
    if trainer.resampling is None:
        return {}
    label = use_case.labels.label
    rows = resampled(data.train, trainer.resampling, label=label, seed=seed)
    return {
        "resampling.kind": trainer.resampling.kind,
        "resampling.ratio": trainer.resampling.ratio,
        "resampling.train_rows": len(rows),
        "resampling.train_positives": int((rows[label] == 1).sum()),
    }


def scoring_model(use_case: UseCase, trainer: Trainer, seed: int) -> ScoringModel:
    """The unfitted model of `trainer`: its estimator, inputs and defaults."""
    return ScoringModel(
        trainer.model(seed),
        list(trainer.inputs) or use_case.feature_names,
        use_case.feature_defaults,
        supervised=trainer.supervised,
        task=use_case.task,
    )


def fit_model(
    use_case: UseCase,
    trainer: Trainer,
    train: pd.DataFrame,
    *,
    seed: int,
    engine: Engine | None = None,
) -> ScoringModel:
    """`trainer`'s model fitted on `train`, resampled first when it declares so.

    `engine` decides where the estimator fits (a cluster trains XGBoost on its
    workers); the trainer only declares the model.
    """
    labels = use_case.labels
    if trainer.resampling is not None:
        train = resampled(train, trainer.resampling, label=labels.label, seed=seed)
    model = scoring_model(use_case, trainer, seed)
    return model.fit(
        train[use_case.model_inputs], train[labels.label].to_numpy(), engine=engine
    )


def champion_metric(
    registry: Registry, use_case: UseCase, holdout: pd.DataFrame
) -> float | None:
    """The current champion's primary metric on this holdout, None without one."""
    if registry.version_of(use_case.name, "champion") is None:
        return None
    champion = load_model(registry, use_case.name, "champion")
    return evaluate(champion, holdout, use_case)[use_case.gates.primary_metric]


def train_candidate(
    use_case: UseCase,
    trainer: Trainer,
    data: TrainingSet,
    *,
    registry: Registry,
    experiment: str,
    champion: float | None,
    seed: int,
    actor: str,
    engine: Engine | None = None,
) -> Candidate:
    """Fit, evaluate, log and register one model; gate it; make it challenger.

    The model fits where `engine` decides (default: here).
    """
    labels = use_case.labels
    model = fit_model(use_case, trainer, data.train, seed=seed, engine=engine)
    if trainer.interval is not None:
        assert data.valid is not None  # a validation part (UseCase checks)
        model.calibrate_interval(
            data.valid[use_case.model_inputs],
            data.valid[labels.label].to_numpy(),
            coverage=trainer.interval,
        )
    scored = scored_frame(model, data.test, use_case)
    metrics = {name: float(metric(scored)) for name, metric in use_case.metrics.items()}
    holdout = data.test[use_case.model_inputs]
    gates = check_gates(
        model,
        holdout,
        metrics,
        use_case.gates,
        champion_metric=champion,
        seed=seed,
        directions={n: greater_is_better(m) for n, m in use_case.metrics.items()},
        task=use_case.task,
    )
    with mlflow.start_run(experiment_id=experiment, run_name=trainer.name) as run:
        mlflow.log_params(_params(use_case, trainer, model, data, seed=seed))
        metrics |= interval_metrics(model, data.test, use_case)  # not gated
        mlflow.log_metrics({k: v for k, v in metrics.items() if not np.isnan(v)})
        log_verdict(
            use_case.name,
            training_key(use_case, trainer, data.lineage, seed),
            gates,
            lineage=data.lineage,
            split=data.split,
        )
        train_inputs = data.train[use_case.model_inputs]
        profile = reference_profile(
            {
                **{f: train_inputs[f] for f in use_case.feature_names},
                "score": model.predict(train_inputs),
            },
            bins=use_case.monitoring.drift.bins,
        )
        mlflow.log_dict(profile, PROFILE_ARTIFACT)
        # A synthetic example (column medians), never real rows: rows can be PII.
        example = synthetic_example(holdout)
        # MLflow prints registration notices to stderr itself; the CLI reports them
        with contextlib.redirect_stderr(io.StringIO()):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                serialization_format="cloudpickle",
                signature=infer_signature(example, model.predict(example)),
                input_example=example,
                pip_requirements=requirements(trainer, model.estimator),
                registered_model_name=use_case.name,
            )
    candidate = as_challenger(
        use_case.name,
        info,
        run,
        trainer,
        registry,
        actor=actor,
        metrics=metrics,
        gates=gates,
    )
    candidate.test_scores = scored
    return candidate


def synthetic_example(holdout: pd.DataFrame) -> pd.DataFrame:
    """Two rows of column medians, text columns (ids, pseudonyms) a placeholder:
    an input example built from no real row (rows can be PII)."""
    text = holdout.select_dtypes(exclude=["number", "bool"]).columns
    numeric = holdout.drop(columns=text).astype("float64").median()
    example = pd.DataFrame([numeric] * 2).reset_index(drop=True)
    for column in text:
        example[column] = "example"
    return example[list(holdout.columns)]


def log_verdict(
    name: str,
    key: str,
    gates: list[GateResult],
    *,
    lineage: dict[str, int],
    split: dict[str, object],
) -> None:
    """On the active run: training key, lineage, split and every gate's verdict."""
    mlflow.set_tags({f"{LINEAGE_TAG}.{t}": str(v) for t, v in lineage.items()})
    mlflow.set_tags(
        {
            KEY_TAG: key,
            "aistack.use_case": name,
            "aistack.gates_passed": str(all(g.passed for g in gates)).lower(),
            **{
                f"gate.{g.name}": f"{'pass' if g.passed else 'FAIL'}: {g.detail}"
                for g in gates
            },
        }
    )
    mlflow.log_metrics({f"gate.{g.name}": float(g.passed) for g in gates})
    mlflow.log_dict({g.name: g.__dict__ for g in gates}, "gates.json")
    mlflow.log_dict(lineage, "lineage.json")
    mlflow.log_dict(split, "split.json")


def as_challenger(
    name: str,
    info: Any,  # noqa: ANN401  (mlflow's ModelInfo)
    run: Any,  # noqa: ANN401  (mlflow's ActiveRun)
    trainer: Trainer,
    registry: Registry,
    *,
    actor: str,
    metrics: dict[str, float],
    gates: list[GateResult],
) -> Candidate:
    """The candidate just registered (its artifact digest recorded):
    `challenger` when it passed every gate.

    A version that failed a gate stays registered (its run holds why) but is
    tagged `refused` with the failed gates, and no alias moves to it.
    """
    version = int(info.registered_model_version)
    record_digest(registry, name, version)
    candidate = Candidate(trainer.name, run.info.run_id, version, metrics, gates)
    if not candidate.passed:
        registry.refuse(name, version, reason=describe(gates))
        return candidate
    registry.move(
        name,
        "challenger",
        version,
        actor=actor,
        reason=f"new version from run {run.info.run_id} ({trainer.name})",
    )
    return candidate


def best_candidate(use_case: UseCase, candidates: list[Candidate]) -> Candidate | None:
    """The candidate passing every gate with the best primary metric (its direction
    honoured: the lowest value of a lower-is-better metric)."""
    primary = use_case.gates.primary_metric
    passing = [c for c in candidates if c.passed]
    if not passing:
        return None
    sign = 1.0 if greater_is_better(use_case.metrics[primary]) else -1.0
    return max(passing, key=lambda c: sign * c.metrics[primary])


def choose_champion(
    use_case: UseCase, candidates: list[Candidate], *, registry: Registry, actor: str
) -> Candidate | None:
    """Promote the best candidate that passed every gate, by the primary metric."""
    best = best_candidate(use_case, candidates)
    if best is None:
        return None
    return promote_champion(
        use_case.name,
        best,
        use_case.gates.primary_metric,
        registry=registry,
        actor=actor,
    )


def promote_champion(
    name: str, best: Candidate, primary: str, *, registry: Registry, actor: str
) -> Candidate:
    """Make `best` champion (and clear challenger if it pointed there)."""
    reason = (
        f"passed all gates; {primary}={best.metrics[primary]:.4f} "
        f"(run {best.run_id}, {best.trainer})"
    )
    registry.move(name, "champion", best.version, actor=actor, reason=reason)
    if registry.version_of(name, "challenger") == best.version:
        registry.move(name, "challenger", None, actor=actor, reason="became champion")
    return best


def describe(gates: list[GateResult]) -> str:
    """Failed gates in one line (or 'all passed')."""
    failed = [f"{g.name} ({g.detail})" for g in gates if not g.passed]
    return "all passed" if not failed else "; ".join(failed)
