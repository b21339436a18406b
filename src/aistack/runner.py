"""Run a use case's stages in flow order: ingest, silver, gold, train, score.

Each stage reads only the stage before it and is a function of its input table
versions, so re-running a stage on the same inputs changes nothing.
"""

from __future__ import annotations

import gc
import getpass
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import BaseModel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from aistack.contract import Batch, PostgresTable, RankingUseCase, UseCase
from aistack.errors import ConfigError
from aistack.features.derived import build_derived
from aistack.features.gold import GoldResult, build_gold
from aistack.flow import STAGES, Stage
from aistack.governance.pii import cipher_for, source_pii
from aistack.lake.bronze import IngestResult, ingest
from aistack.lake.silver import SilverResult, build_silver
from aistack.sql import quote
from aistack.training.sets import split_periods
from aistack.workspace import Workspace, create_tracking_db

if TYPE_CHECKING:
    from aistack.serving.batch import ScoreResult
    from aistack.training.fit import Candidate
    from aistack.training.tune import TuneResult


@dataclass
class RunReport:
    """What a run did, stage by stage, and how long each took (seconds)."""

    ingest: IngestResult | None = None
    silver: list[SilverResult] = field(default_factory=list)
    gold: list[GoldResult] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    champion: Candidate | None = None
    scoring: ScoreResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    evaluation_report: Path | None = None
    model_cards: list[Path] = field(default_factory=list)


def new_progress(*, enabled: bool = True) -> Progress:
    """A rich progress display for stage work."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


@contextmanager
def _timed(report: RunReport, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    report.seconds[stage] = round(time.perf_counter() - start, 2)
    release_memory()


@contextmanager
def _tracking(ws: Workspace) -> Iterator[None]:
    """MLflow pointed at the workspace's tracking database, created first the
    safe way (a process killed while MLflow migrates a new SQLite database in
    place leaves one no later run can open)."""
    from aistack.training.tracking import tracking

    create_tracking_db(ws.settings.mlflow_uri)
    with tracking(ws.settings.mlflow_uri):
        yield


def release_memory() -> None:
    """Give the memory a finished stage freed back to the system: Arrow's
    allocator keeps freed pages for reuse (~200 MiB after a 1x ingest), which
    would add to the next stage's peak."""
    gc.collect()
    pa.default_memory_pool().release_unused()


def default_score_range(ws: Workspace, use_case: UseCase) -> tuple[datetime, datetime]:
    """What batch scoring covers by default: the latest time split's test days
    (every labelled row for a fraction split or rows without a clock)."""
    labels = use_case.labels
    if labels.timestamp is None:  # no clock: every row, whatever its range
        return datetime.min, datetime.max
    con = ws.lake.connect(ws.lake.versions([labels.table]))
    last = con.execute(
        f"SELECT max({quote(labels.timestamp)}) FROM {labels.table}"
    ).fetchone()
    if not use_case.split.by_days:  # rows are not split by time: score them all
        first = con.execute(
            f"SELECT min({quote(labels.timestamp)}) FROM {labels.table}"
        ).fetchone()
        if first and first[0] is not None and last and last[0] is not None:
            return first[0], last[0] + timedelta(microseconds=1)
    periods = split_periods(last[0] if last else datetime.now(), use_case)
    return periods["test_start"], periods["test_end"]


def run(
    use_case: UseCase | RankingUseCase,
    ws: Workspace,
    params: BaseModel,
    *,
    stages: Sequence[Stage] = STAGES,
    progress: Progress | None = None,
    actor: str | None = None,
    score_range_: tuple[datetime, datetime] | None = None,
) -> RunReport:
    """Run the chosen stages of `use_case` in flow order."""
    progress = progress or new_progress(enabled=False)
    actor = actor or getpass.getuser()
    report = RunReport()
    now = datetime.now(UTC)
    with ws.exclusive(f"aistack run {use_case.name}"), progress:
        _land(
            use_case,
            ws,
            params,
            stages=stages,
            report=report,
            progress=progress,
            now=now,
        )
        if isinstance(use_case, RankingUseCase):
            _run_ranking(
                use_case,
                ws,
                stages=stages,
                report=report,
                progress=progress,
                actor=actor,
            )
            return report
        if "gold" in stages:
            with _timed(report, "gold"):
                task = progress.add_task("silver -> gold", total=len(use_case.views))
                for view in use_case.views:
                    report.gold.append(
                        build_gold(
                            ws.lake, use_case, view, written_at=now, engine=ws.engine
                        )
                    )
                    release_memory()  # each view's window state, before the next
                    progress.advance(task)
        if not {"train", "score"} & set(stages):
            return report
        # the learning stages' libraries (MLflow, scikit-learn, ...) are imported
        # when one runs: landing and gold stay light (~130 MiB less at their peaks)
        from aistack.serving.batch import score_range

        with _tracking(ws):
            if "train" in stages:
                with _timed(report, "train"):
                    _train(
                        use_case, ws, report, progress=progress, actor=actor, now=now
                    )
            if "score" in stages:
                with _timed(report, "score"):
                    task = progress.add_task("batch scoring", total=1)
                    start, end = score_range_ or default_score_range(ws, use_case)
                    report.scoring = score_range(
                        ws.lake,
                        use_case,
                        ws.registry,
                        start=start,
                        end=end,
                        engine=ws.engine,
                    )
                    progress.advance(task)
    return report


def _land(
    use_case: UseCase | RankingUseCase,
    ws: Workspace,
    params: BaseModel,
    *,
    stages: Sequence[Stage],
    report: RunReport,
    progress: Progress,
    now: datetime,
) -> None:
    """Ingest -> bronze -> silver: the same for every kind of use case."""
    landing = {"ingest", "silver"} & set(stages)
    codec = cipher_for(use_case, ws.settings, os.environ) if landing else None
    if "ingest" in stages:
        with _timed(report, "ingest"):
            task = progress.add_task("ingest -> bronze", total=None)
            batches = _ticking(
                use_case.read_sources(params, ws.settings.seed), progress, task
            )
            report.ingest = ingest(
                ws.lake,
                batches,
                ingested_at=now,
                pii=source_pii(use_case),
                codec=codec,
            )
    if "silver" in stages:
        with _timed(report, "silver"):
            task = progress.add_task("bronze -> silver", total=len(use_case.silver))
            for spec in use_case.silver:
                report.silver.append(
                    build_silver(
                        ws.lake,
                        spec,
                        processed_at=now,
                        codec=codec,
                        engine=ws.engine,
                    )
                )
                progress.advance(task)


def _run_ranking(
    uc: RankingUseCase,
    ws: Workspace,
    *,
    stages: Sequence[Stage],
    report: RunReport,
    progress: Progress,
    actor: str,
) -> None:
    """Gold tables, train + gate every recommender, then batch top-K per user."""
    from aistack.serving.batch import score_recommendations
    from aistack.training.fit import existing_candidate
    from aistack.training.recommend import (
        champion_ranking_metric,
        choose_ranking_champion,
        load_ranking_data,
        ranking_key,
        train_recommender,
    )
    from aistack.training.tracking import experiment_id

    seed = ws.settings.seed
    if "gold" in stages and uc.gold:
        with _timed(report, "gold"):
            task = progress.add_task("silver -> gold", total=len(uc.gold))
            for gold in uc.gold:
                table = uc.gold_table_name(gold)
                report.gold.append(build_derived(ws.lake, gold, table=table))
                progress.advance(task)
    with _tracking(ws):
        if "train" in stages:
            with _timed(report, "train"):
                task = progress.add_task("train + gate", total=len(uc.trainers) + 1)
                experiment = experiment_id(
                    uc, ws.settings.artifacts_dir.resolve().as_uri()
                )
                data = load_ranking_data(ws.lake, uc, seed=seed)
                progress.advance(task)
                champion = champion_ranking_metric(ws.registry, uc, data)
                trained = False
                for trainer in uc.trainers:
                    key = ranking_key(uc, trainer, data.lineage, seed)
                    found = existing_candidate(experiment, key, uc)
                    if found is None:
                        trained = True
                        found = train_recommender(
                            uc,
                            trainer,
                            data,
                            registry=ws.registry,
                            experiment=experiment,
                            champion=champion,
                            seed=seed,
                            actor=actor,
                        )
                    report.candidates.append(found)
                    progress.advance(task)
                if trained:  # same inputs, same models: no alias to move
                    report.champion = choose_ranking_champion(
                        uc, report.candidates, registry=ws.registry, actor=actor
                    )
        if "score" in stages:
            with _timed(report, "score"):
                report.scoring = score_recommendations(ws.lake, uc, ws.registry)


def _ticking(
    batches: Iterable[Batch | PostgresTable], progress: Progress, task: TaskID
) -> Iterator[Batch | PostgresTable]:
    for batch in batches:
        progress.advance(task)
        yield batch


def _train(
    use_case: UseCase,
    ws: Workspace,
    report: RunReport,
    *,
    progress: Progress,
    actor: str,
    now: datetime,
) -> None:
    from aistack.training.card import log_card_scores, write_model_card
    from aistack.training.fit import (
        champion_metric,
        choose_champion,
        existing_candidate,
        train_candidate,
        training_key,
    )
    from aistack.training.report import write_evaluation_report
    from aistack.training.sets import build_training_set
    from aistack.training.tracking import experiment_id
    from aistack.training.tune import tuning_history, with_tuned

    task = progress.add_task("train + gate", total=len(use_case.trainers) + 1)
    experiment = experiment_id(use_case, ws.settings.artifacts_dir.resolve().as_uri())
    lineage = ws.lake.versions(
        [use_case.labels.table, *(use_case.gold_table(v) for v in use_case.views)]
    )
    seed = ws.settings.seed
    todo = []
    for declared in use_case.trainers:
        trainer = with_tuned(experiment, declared)  # the last tuned parameters
        key = training_key(use_case, trainer, lineage, seed)
        found = existing_candidate(experiment, key, use_case)
        if found is None:
            todo.append(trainer)
        else:
            report.candidates.append(found)
            progress.advance(task)
    if not todo:  # same inputs, same models: nothing to train, no alias to move
        progress.advance(task)
        return
    data = build_training_set(
        ws.lake,
        use_case,
        as_of=now + timedelta(seconds=1),
        seed=seed,
        engine=ws.engine,
    )
    progress.advance(task)
    champion = champion_metric(ws.registry, use_case, data.test)
    for trainer in todo:
        report.candidates.append(
            train_candidate(
                use_case,
                trainer,
                data,
                registry=ws.registry,
                experiment=experiment,
                champion=champion,
                seed=seed,
                actor=actor,
                engine=ws.engine,
            )
        )
        progress.advance(task)
    report.champion = choose_champion(
        use_case, report.candidates, registry=ws.registry, actor=actor
    )
    path = ws.settings.workspace / "reports" / f"{use_case.name}-evaluation-"
    report.evaluation_report = write_evaluation_report(
        path.with_name(f"{path.name}{now:%Y%m%dT%H%M%S}.html"),
        use_case,
        report.candidates,
        report.champion,
        when=now,
        tuning={
            t.name: h
            for t in use_case.trainers
            if (h := tuning_history(experiment, t.name)) is not None
        },
    )
    client = ws.registry.client
    for candidate in report.candidates:  # every trained model's run links to it
        if not candidate.reused:
            client.log_artifact(candidate.run_id, str(report.evaluation_report))
        if candidate.test_scores is not None:
            log_card_scores(client, candidate.run_id, use_case, candidate.test_scores)
            card = write_model_card(
                client,
                use_case,
                candidate.version,
                card_path(ws, use_case, candidate.version),
            )
            client.log_artifact(candidate.run_id, str(card))
            report.model_cards.append(card)


def card_path(ws: Workspace, use_case: UseCase, version: int) -> Path:
    """Where the model card of `version` is written in the workspace."""
    return ws.settings.workspace / "reports" / f"{use_case.name}-card-v{version}.html"


def tune(
    use_case: UseCase,
    ws: Workspace,
    *,
    trainers: Sequence[str] = (),
    trials: int | None = None,
    seconds: float | None = None,
) -> list[TuneResult]:
    """Tune each chosen trainer (default: every one declaring a search space) on
    the use case's validation folds; `run` then trains with the chosen values."""
    from aistack.training.tracking import experiment_id
    from aistack.training.tune import prequential_folds, split_folds, tune_trainer

    known = {t.name: t for t in use_case.trainers}
    unknown = [n for n in trainers if n not in known]
    if unknown:
        msg = f"--trainer: {', '.join(unknown)} not a trainer of {use_case.name}"
        raise ConfigError(f"{msg} ({', '.join(known)})")
    chosen = [known[n] for n in trainers] or [
        t for t in use_case.trainers if t.search_space
    ]
    if not chosen:
        raise ConfigError(f"{use_case.name}: no trainer declares a search_space")
    seed = ws.settings.seed
    as_of = datetime.now(UTC) + timedelta(seconds=1)
    lineage = ws.lake.versions(
        [use_case.labels.table, *(use_case.gold_table(v) for v in use_case.views)]
    )
    if use_case.split.by_days:
        folds = prequential_folds(ws.lake, use_case, as_of=as_of, lineage=lineage)
    else:
        folds = split_folds(ws.lake, use_case, as_of=as_of, seed=seed)
    with _tracking(ws):
        experiment = experiment_id(
            use_case, ws.settings.artifacts_dir.resolve().as_uri()
        )
        return [
            tune_trainer(
                use_case,
                trainer,
                folds,
                experiment=experiment,
                seed=seed,
                trials=trials,
                seconds=seconds,
            )
            for trainer in chosen
        ]
