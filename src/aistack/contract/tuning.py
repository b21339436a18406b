"""What a trainer may be tuned over, and how candidates are validated.

A search space maps an estimator parameter (as `set_params` names it, e.g.
`max_depth` or `clf__C` in a pipeline) to a declared range; the platform turns
it into Optuna distributions, so a use case declares and never imports a tuner.
"""

from __future__ import annotations

from dataclasses import dataclass

from aistack.errors import DeclarationError


@dataclass(frozen=True)
class IntRange:
    """Integers in [low, high], on a log scale when `log`."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if self.low > self.high or (self.log and self.low < 1):
            msg = f"IntRange({self.low}, {self.high}): need low <= high (>= 1 if log)"
            raise DeclarationError(msg)


@dataclass(frozen=True)
class FloatRange:
    """Floats in [low, high], on a log scale when `log`."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if self.low > self.high or (self.log and self.low <= 0):
            msg = f"FloatRange({self.low}, {self.high}): need low <= high (> 0 if log)"
            raise DeclarationError(msg)


@dataclass(frozen=True)
class Choice:
    """One of a few values (str, int, float, bool or None)."""

    options: tuple[str | int | float | bool | None, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise DeclarationError("Choice: declare at least one option")


Distribution = IntRange | FloatRange | Choice


@dataclass(frozen=True)
class Tuning:
    """How `aistack tune` validates a candidate's parameters.

    Time split by days: `folds` prequential folds (the handbook's model
    selection): fold i trains on `train_days` ending `delay_days + test_days`
    before the split's train end, shifted back by i validation windows, and is
    validated on `test_days` after a `delay_days` gap, formed by the use case's
    evaluation protocol. Other splits: the train part is cut again by the
    declared kind (a validation part). `metric`: the score to optimise (default:
    the gates' primary metric), averaged over folds; `startup_trials` run before
    pruning starts (median pruner over folds).
    """

    folds: int = 4
    metric: str | None = None
    startup_trials: int = 5

    def __post_init__(self) -> None:
        if self.folds < 1 or self.startup_trials < 0:
            raise DeclarationError("tuning: folds must be >= 1, startup_trials >= 0")
