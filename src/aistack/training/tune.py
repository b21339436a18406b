"""Hyperparameter search: Optuna TPE with median pruning over a trainer's space.

Candidates are validated on prequential folds for a time split by days (train,
delay, validation windows sliding back in time before the test period, the
fraud handbook's model selection) or on a validation cut of the train part for
other splits; the test part is never read. Every trial is a nested MLflow run
under one tuning run, which records the chosen parameters; `run` then trains
with the last tuned parameters. Deterministic for a seed and a trial budget.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd

from aistack.contract import Choice, Distribution, FloatRange, Trainer, UseCase
from aistack.contract.model import greater_is_better
from aistack.errors import ContractError
from aistack.lake.delta import Lake
from aistack.training.fit import evaluate, fit_model
from aistack.training.sets import (
    assign_parts,
    build_training_set,
    evaluated_rows,
    labelled_frame,
    split_periods,
)

TUNING_TAG = "aistack.tuning"
"""Tag of a tuning run: the trainer it tuned."""
TUNED_PARAMS_TAG = "aistack.tuned_params"
"""Tag of a tuning run: the chosen parameters, as JSON."""


@dataclass
class Fold:
    """One validation fold: rows to fit on, rows to validate on, and when."""

    train: pd.DataFrame
    valid: pd.DataFrame
    period: dict[str, str]


@dataclass
class TuneResult:
    """What one tuning did."""

    trainer: str
    run_id: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    trials: int
    pruned: int
    seconds: float
    history: list[dict[str, Any]]


def prequential_folds(
    lake: Lake, use_case: UseCase, *, as_of: datetime, lineage: dict[str, int]
) -> list[Fold]:
    """The handbook's prequential folds before the test period (time split by days).

    Fold 0 validates on the `test_days` that end at the split's train end (their
    labels are known when the model is trained), after a `delay_days` gap behind
    `train_days` of training; fold i is fold 0 shifted back by i validation
    windows. Validation rows follow the use case's evaluation protocol.
    """
    labels, split = use_case.labels, use_case.split
    con = lake.connect({labels.table: lineage[labels.table]})
    ts = labels.timestamp
    first, last = con.execute(
        f'SELECT min("{ts}"), max("{ts}") FROM {labels.table}'
    ).fetchone() or (None, None)
    if last is None:
        raise ContractError(f"{labels.table} holds no labelled rows")
    end = split_periods(last, use_case)["train_end"]
    n = use_case.tuning.folds
    days = timedelta(days=1)
    span = split.train_days + split.delay_days + split.test_days
    earliest = end - (span + (n - 1) * split.test_days) * days
    if first > earliest:
        msg = (
            f"tuning: {n} prequential folds need labels from {earliest:%Y-%m-%d}, "
            f"the first is {first:%Y-%m-%d}; declare fewer folds (Tuning(folds=))"
        )
        raise ContractError(msg)
    frame = labelled_frame(lake, use_case, earliest, end, as_of=as_of, lineage=lineage)
    stamps = frame[ts]
    folds = []
    for i in range(n):
        valid_end = end - i * split.test_days * days
        valid_start = valid_end - split.test_days * days
        train_end = valid_start - split.delay_days * days
        train_start = train_end - split.train_days * days
        train = frame[(stamps >= train_start) & (stamps < train_end)]
        valid = frame[(stamps >= valid_start) & (stamps < valid_end)]
        valid = evaluated_rows(
            use_case, frame, valid, train_start=train_start, test_start=valid_start
        )
        period = {
            "train_start": train_start.isoformat(),
            "valid_start": valid_start.isoformat(),
            "valid_end": valid_end.isoformat(),
        }
        folds.append(Fold(train, valid, period))
    return folds


def split_folds(
    lake: Lake, use_case: UseCase, *, as_of: datetime, seed: int
) -> list[Fold]:
    """One fold from the declared split: its validation part, or the train part
    cut 80:20 again by the declared kind (the test part is never read)."""
    data = build_training_set(lake, use_case, as_of=as_of, seed=seed)
    if data.valid is not None:
        return [Fold(data.train, data.valid, {"split": "declared validation part"})]
    inner = dataclasses.replace(
        use_case, split=dataclasses.replace(use_case.split, fractions=(0.8, 0.2))
    )
    train = data.train.reset_index(drop=True)
    parts = assign_parts(train, inner, seed=seed)
    return [Fold(train[parts == 0], train[parts == 1], {"split": "train part 80:20"})]


def declared_values(trainer: Trainer, seed: int) -> dict[str, Any]:
    """The trainer's own values of its searched parameters, those inside their
    declared ranges: the first trial, so the choice is never worse on the folds
    than what `run` trains untuned."""
    estimator = trainer.model(seed)
    get_params = getattr(estimator, "get_params", None)
    current = get_params(deep=True) if callable(get_params) else vars(estimator)
    values = {}
    for name, dist in trainer.search_space.items():
        value = current.get(name)
        if isinstance(dist, Choice):
            if value in dist.options:
                values[name] = value
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and dist.low <= value <= dist.high
            and (isinstance(dist, FloatRange) or float(value).is_integer())
        ):
            values[name] = value if isinstance(dist, FloatRange) else int(value)
    return values


def suggest(trial: optuna.Trial, name: str, dist: Distribution) -> Any:  # noqa: ANN401
    """One parameter value from its declared range."""
    if isinstance(dist, Choice):
        return trial.suggest_categorical(name, list(dist.options))
    if isinstance(dist, FloatRange):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log)


def tune_trainer(
    use_case: UseCase,
    trainer: Trainer,
    folds: list[Fold],
    *,
    experiment: str,
    seed: int,
    trials: int | None,
    seconds: float | None,
) -> TuneResult:
    """Search `trainer.search_space` on `folds`; one MLflow run, a nested run per
    trial; the chosen parameters are tagged on the tuning run."""
    if not trainer.search_space:
        raise ContractError(f"trainer {trainer.name}: declares no search_space")
    name = use_case.tuning.metric or use_case.gates.primary_metric
    up = greater_is_better(use_case.metrics[name])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if up else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=use_case.tuning.startup_trials
        ),
    )
    study.enqueue_trial(declared_values(trainer, seed), skip_if_exists=True)
    deadline = [float("inf")]  # set when the search starts

    def objective(trial: optuna.Trial) -> float:
        params = {p: suggest(trial, p, d) for p, d in trainer.search_space.items()}
        candidate = dataclasses.replace(trainer, params={**trainer.params, **params})
        with mlflow.start_run(
            experiment_id=experiment, nested=True, run_name=f"trial-{trial.number}"
        ):
            mlflow.log_params(params)
            values: list[float] = []
            for i, fold in enumerate(folds):
                if i and clock() > deadline[0] and _any_complete(study):
                    # Optuna checks its timeout between trials only: a trial
                    # started before the end stops at its next fold instead
                    mlflow.set_tag("state", "pruned: over the time budget")
                    raise optuna.TrialPruned
                model = fit_model(use_case, candidate, fold.train, seed=seed)
                values.append(evaluate(model, fold.valid, use_case)[name])
                mlflow.log_metric(f"fold.{name}", values[-1], step=i)
                trial.report(float(np.mean(values)), i)
                if trial.should_prune():
                    mlflow.set_tag("state", "pruned")
                    raise optuna.TrialPruned
            value = float(np.mean(values))
            mlflow.log_metric(name, value)
            mlflow.set_tag("state", "complete")
        return value

    start = time.perf_counter()
    with mlflow.start_run(
        experiment_id=experiment, run_name=f"tune-{trainer.name}"
    ) as run:
        mlflow.set_tags({TUNING_TAG: trainer.name, "aistack.use_case": use_case.name})
        mlflow.log_params(
            {"metric": name, "folds": len(folds), "seed": seed, "trials": trials}
        )
        mlflow.log_dict({"folds": [f.period for f in folds]}, "folds.json")
        if trials is None and seconds is None:
            trials = 20
        if seconds is not None:
            deadline[0] = clock() + seconds
        study.optimize(objective, n_trials=trials, timeout=seconds)
        history = [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.params,
            }
            for t in study.trials
        ]
        mlflow.log_dict({"metric": name, "trials": history}, "tuning.json")
        best = study.best_trial
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metric(f"best.{name}", float(best.value or 0.0))
        mlflow.set_tag(TUNED_PARAMS_TAG, json.dumps(best.params, sort_keys=True))
    pruned = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    return TuneResult(
        trainer.name,
        run.info.run_id,
        name,
        float(best.value or 0.0),
        dict(best.params),
        len(study.trials),
        pruned,
        round(time.perf_counter() - start, 2),
        history,
    )


def clock() -> float:
    """Seconds on a monotonic clock (the tuning budget's)."""
    return time.perf_counter()


def _any_complete(study: optuna.Study) -> bool:
    complete = optuna.trial.TrialState.COMPLETE
    return any(t.state == complete for t in study.trials)


def last_tuned(experiment: str, trainer: str) -> tuple[str, dict[str, Any]] | None:
    """The latest tuning run of `trainer` and the parameters it chose, if any."""
    runs = mlflow.search_runs(
        [experiment],
        filter_string=f"tags.`{TUNING_TAG}` = '{trainer}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    for found in runs:
        raw = found.data.tags.get(TUNED_PARAMS_TAG)
        if raw is not None:
            return found.info.run_id, dict(json.loads(raw))
    return None


@dataclass(frozen=True)
class TuningHistory:
    """A tuning run as the evaluation report shows it: every trial's state,
    objective and parameters, and the parameters chosen."""

    run_id: str
    metric: str
    trials: list[dict[str, Any]]
    best_params: dict[str, Any]


def tuning_history(experiment: str, trainer: str) -> TuningHistory | None:
    """The history of `trainer`'s last tuning run (None: never tuned)."""
    found = last_tuned(experiment, trainer)
    if found is None:
        return None
    run_id, best = found
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/tuning.json")
    return TuningHistory(run_id, logged["metric"], logged["trials"], best)


def with_tuned(experiment: str, trainer: Trainer) -> Trainer:
    """`trainer` with its last tuned parameters set (itself if never tuned)."""
    found = last_tuned(experiment, trainer.name)
    if found is None:
        return trainer
    return dataclasses.replace(trainer, params={**trainer.params, **found[1]})
