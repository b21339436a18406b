"""Model quality on the fraud handbook's protocol: its five baselines vs our champion.

On the default simulation (183 days from 2018-04-01) and the handbook's split
(train 7 days from 2018-07-25, 7 days delay, test 7 days; transactions of cards
known compromised removed from the test set; card precision@100 per day with
detected cards removed), this bench:

1. lands the simulation through bronze, silver and gold (the platform's path);
2. trains the handbook's five baselines with the book's hyperparameters on the
   same features, standardised as the book does (logistic regression, decision
   trees of depth 2 and unlimited, random forest, XGBoost): the peers;
3. tunes our trainers (`aistack tune`: prequential folds before the test week,
   a time budget per trainer), then trains, gates and chooses the champion
   (`aistack run --stage train`);
4. prints AUC ROC, average precision and CP@100 of every model on the same test
   rows, training and tuning times, and the targets (AUC >= 0.88, AP >= 0.70,
   CP@100 >= 0.31; tuning <= 10 minutes).

    .venv/bin/python bench/model_quality.py                  # default simulation
    .venv/bin/python bench/model_quality.py --seconds 60 --workspace /tmp/mq
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from xgboost import XGBClassifier

from aistack.contract import Split, get_use_case
from aistack.runner import run, tune
from aistack.settings import load_settings
from aistack.training.fit import evaluate
from aistack.training.models import ScoringModel
from aistack.training.sets import build_training_set
from aistack.workspace import Workspace

HANDBOOK_START = datetime(2018, 7, 25)
TARGETS = {"roc_auc": 0.88, "average_precision": 0.70, "card_precision_at_100": 0.31}
PUBLISHED = {  # the handbook's tables, on its own data
    "handbook RF (published)": (0.867, 0.658, 0.287),
    "handbook XGBoost (published)": (0.862, 0.639, 0.273),
    "handbook best after selection (published)": (0.872, 0.687, 0.303),
}


def baselines(seed: int) -> dict[str, object]:
    """The handbook's chapter 3 baselines, with its hyperparameters."""
    return {
        "LR": LogisticRegression(random_state=seed),
        "DT depth 2": DecisionTreeClassifier(max_depth=2, random_state=seed),
        "DT unlimited": DecisionTreeClassifier(random_state=seed),
        "RF": RandomForestClassifier(random_state=seed, n_jobs=2),
        "XGBoost": XGBClassifier(random_state=seed, n_jobs=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=120.0, help="per trainer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="model-quality-"))
    ws = Workspace(load_settings(workspace=root, seed=args.seed))
    uc = dataclasses.replace(
        get_use_case("fraud"),
        split=Split(train_days=7, delay_days=7, test_days=7, start=HANDBOOK_START),
    )
    start = time.perf_counter()
    if not ws.lake.exists(uc.gold_table(uc.views[-1])):
        run(uc, ws, uc.params(), stages=("ingest", "silver", "gold"))
    print(f"landed in {time.perf_counter() - start:.0f} s ({root})")
    data = build_training_set(
        ws.lake, uc, as_of=datetime.now(UTC) + timedelta(seconds=1), seed=args.seed
    )
    print(f"train rows {len(data.train):,}, test rows {len(data.test):,} (protocol)")
    rows: list[tuple[str, float, float, float, float]] = []
    for name, estimator in baselines(args.seed).items():
        model = ScoringModel(
            make_pipeline(StandardScaler(), estimator),
            uc.feature_names,
            uc.feature_defaults,
            supervised=True,
        )
        t0 = time.perf_counter()
        model.fit(data.train[uc.model_inputs], data.train[uc.labels.label])
        took = time.perf_counter() - t0
        m = evaluate(model, data.test, uc)
        rows.append(
            (
                f"handbook {name}",
                m["roc_auc"],
                m["average_precision"],
                m["card_precision_at_100"],
                took,
            )
        )
    t0 = time.perf_counter()
    tuned = tune(uc, ws, trainers=["xgboost", "lightgbm"], seconds=args.seconds)
    tuning = time.perf_counter() - t0
    for r in tuned:
        print(
            f"tuned {r.trainer}: {r.trials} trials ({r.pruned} pruned), "
            f"{r.metric}={r.best_value:.4f} on the folds, {r.best_params}"
        )
    t0 = time.perf_counter()
    report = run(uc, ws, uc.params(), stages=("train",))
    training = time.perf_counter() - t0
    champion = report.champion.trainer if report.champion else None
    for c in report.candidates:
        star = " (champion)" if c.trainer == champion else ""
        m = c.metrics
        rows.append(
            (
                f"aistack {c.trainer}{star}",
                m["roc_auc"],
                m["average_precision"],
                m["card_precision_at_100"],
                training,
            )
        )
    print(f"\n{'model':44} {'AUC':>6} {'AP':>6} {'CP@100':>7} {'fit s':>7}")
    for name, (auc, ap, cp) in PUBLISHED.items():
        print(f"{name:44} {auc:6.3f} {ap:6.3f} {cp:7.3f} {'':>7}")
    for name, auc, ap, cp, took in rows:
        print(f"{name:44} {auc:6.3f} {ap:6.3f} {cp:7.3f} {took:7.1f}")
    print(f"\ntuning {tuning:.0f} s for {len(tuned)} trainers (target <= 600 s)")
    if report.champion is not None:
        m = report.champion.metrics
        for metric, target in TARGETS.items():
            verdict = "PASS" if m[metric] >= target else "FAIL"
            print(f"champion {metric} {m[metric]:.3f} target >= {target}: {verdict}")


if __name__ == "__main__":
    main()
