"""The fraud pipeline on a real Dask cluster gives the embedded engine's tables.

The cluster is a `dask scheduler` and two `dask worker` processes started by their
CLI commands on 127.0.0.1. Gold, the point-in-time training set, XGBoost fitting
(`xgboost.dask`) and batch scoring run on the workers; the tables and model
metrics must equal the embedded run's (values to 1e-12).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from xgboost import XGBClassifier

from aistack.contract import get_use_case
from aistack.engine import DaskEngine
from aistack.errors import ConfigError, RegistryError
from aistack.registry.artifacts import load_model
from aistack.runner import RunReport, run
from aistack.serving.batch import score_range
from aistack.serving.inference import load_version
from aistack.settings import Settings
from aistack.training.fit import train_candidate
from aistack.training.sets import build_training_set
from aistack.training.tracking import experiment_id, tracking
from aistack.workspace import Workspace
from cancer_usecase import cancer_use_case
from conftest import SMALL_FRAUD, make_workspace
from servers import dask_cluster, free_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with dask_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address


def cluster_workspace(root: Path, address: str) -> Workspace:
    settings = Settings(
        workspace=root,
        seed=7,
        engine="dask",
        scheduler_address=address,
        engine_partitions=4,
    )
    return Workspace(settings)


def sorted_table(table: pa.Table, *keys: str) -> pa.Table:
    """Rows in key order, without the clock columns (`_written_at`, `scored_at`,
    `_ingested_at`, ...: when a run wrote them)."""
    drop = [
        f.name
        for f in table.schema
        if f.name.endswith("_at") and pa.types.is_timestamp(f.type) and f.type.tz
    ]
    return table.drop_columns(drop).sort_by([(k, "ascending") for k in keys])


def assert_same_table(left: pa.Table, right: pa.Table) -> None:
    assert left.schema == right.schema
    assert left.num_rows == right.num_rows
    for name in left.column_names:
        a, b = left.column(name), right.column(name)
        if pa.types.is_floating(a.type):
            x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12, err_msg=name)
        else:
            assert a.equals(b), name


def test_gold_and_training_set_on_the_cluster_equal_embedded(
    cluster: str, tmp_path: Path
) -> None:
    uc = get_use_case("fraud")
    params = uc.params(customers=150, terminals=300, days=40, bad_rows=2)
    here = make_workspace(tmp_path / "embedded")
    there = cluster_workspace(tmp_path / "cluster", cluster)
    stages = ("ingest", "silver", "gold")
    run(uc, here, params, stages=stages)
    client = there.engine.client
    begun = time.time()
    client.get_task_stream(start=begun)  # the scheduler records tasks
    report = run(uc, there, params, stages=stages)
    tasks = client.get_task_stream(start=begun)
    # silver's row-wise checks ran on both workers
    assert {t["worker"] for t in tasks if "_checked_part" in str(t["key"])} == set(
        client.scheduler_info()["workers"]
    )
    assert sum(s.quarantined_rows for s in report.silver) > 0  # bad rows injected
    for spec in uc.silver:
        for table, keys in (
            (f"silver.{spec.name}", spec.key),
            (f"quarantine.{spec.name}", ("_batch_id", "_row")),
        ):
            if not here.lake.exists(table):
                assert not there.lake.exists(table)
                continue
            assert_same_table(
                sorted_table(there.lake.read(table), *keys),
                sorted_table(here.lake.read(table), *keys),
            )
    accounting = [
        sorted_table(ws.lake.read("ops.batch_accounting"), "table", "_batch_id")
        for ws in (there, here)
    ]
    assert_same_table(*accounting)  # bronze = silver + quarantine, per batch
    again = run(uc, there, params, stages=("silver",))  # idempotent: nothing new
    assert all(s.batches == 0 for s in again.silver)
    for view in uc.views:
        table = uc.gold_table(view)
        assert_same_table(
            sorted_table(there.lake.read(table), view.id),
            sorted_table(here.lake.read(table), view.id),
        )
        # the workers' files (one per non-empty partition), recorded by one commit
        assert there.lake.version(table) == 0
        assert len(there.lake._table(table).file_uris()) > 1
    again = run(uc, there, params, stages=("gold",))  # same inputs: nothing new
    assert all(g.skipped for g in again.gold)
    as_of = datetime.now(UTC)
    sets = [
        build_training_set(ws.lake, uc, as_of=as_of, seed=7, engine=ws.engine)
        for ws in (here, there)
    ]
    pd.testing.assert_frame_equal(sets[0].frame, sets[1].frame, rtol=0, atol=1e-12)
    assert sets[0].split == sets[1].split
    assert sets[0].periods == sets[1].periods
    # an increment (new days) on the cluster: only the new events' rows,
    # each with exactly the embedded values
    more = uc.params(customers=150, terminals=300, days=45, bad_rows=2)
    new_rows = [
        [g.new_rows for g in run(uc, ws, more, stages=stages).gold]
        for ws in (here, there)
    ]
    assert new_rows[0] == new_rows[1]
    assert all(n > 0 for n in new_rows[1])
    for view in uc.views:
        table = uc.gold_table(view)
        assert there.lake.version(table) == 1
        assert_same_table(
            sorted_table(there.lake.read(table), view.id),
            sorted_table(here.lake.read(table), view.id),
        )
    there.engine.close()


@pytest.mark.slow
def test_fraud_on_the_cluster_equals_the_embedded_run(
    fraud_run: tuple[Workspace, RunReport], cluster: str, tmp_path: Path
) -> None:
    embedded, embedded_report = fraud_run
    uc = get_use_case("fraud")
    ws = cluster_workspace(tmp_path / "ws", cluster)
    report = run(uc, ws, uc.params(**SMALL_FRAUD))
    ids = {uc.labels.table: uc.labels.id}
    tables = [
        *(uc.gold_table(v) for v in uc.views),
        uc.labels.table,
        uc.predictions_table,
    ]
    for table in tables:
        key = ids.get(table, "transaction_id")
        assert_same_table(
            sorted_table(ws.lake.read(table), key),
            sorted_table(embedded.lake.read(table), key),
        )
    # gold was written by the workers: several files, one commit per build
    gold = uc.gold_table(uc.views[0])
    assert ws.lake.version(gold) == 0
    assert len(ws.lake._table(gold).file_uris()) > 1
    assert {c.trainer: c.metrics for c in report.candidates} == {
        c.trainer: c.metrics for c in embedded_report.candidates
    }
    assert report.champion is not None and embedded_report.champion is not None
    assert report.champion.trainer == embedded_report.champion.trainer
    assert report.scoring is not None and embedded_report.scoring is not None
    assert report.scoring.rows == embedded_report.scoring.rows
    # idempotent: the same inputs write nothing new
    again = run(uc, ws, uc.params(**SMALL_FRAUD), stages=("gold",))
    assert all(g.skipped for g in again.gold)
    assert ws.lake.version(gold) == 0
    ws.engine.close()


@pytest.mark.slow  # suite budget: one cluster test (gold) stays default
def test_xgboost_trains_on_the_workers_with_the_embedded_metrics(
    cluster: str, tmp_path: Path
) -> None:
    """xgboost.dask on both workers: a plain XGBClassifier in MLflow (digest
    checked on load, ONNX path), with the metrics of a fit in one process."""
    uc = get_use_case("fraud")
    ws = make_workspace(tmp_path / "ws")
    run(
        uc,
        ws,
        uc.params(customers=150, terminals=300, days=40, bad_rows=2),
        stages=("ingest", "silver", "gold"),
    )
    data = build_training_set(ws.lake, uc, as_of=datetime.now(UTC), seed=7)
    trainer = next(t for t in uc.trainers if t.name == "xgboost")
    engine = DaskEngine(cluster)
    client = engine.client
    with tracking(ws.settings.mlflow_uri):
        experiment = experiment_id(uc, ws.settings.artifacts_dir.resolve().as_uri())
        fits = {}
        for where, on in (("here", None), ("cluster", engine)):
            start = time.time()
            client.get_task_stream(start=start)  # the scheduler records tasks
            fits[where] = train_candidate(
                uc,
                trainer,
                data,
                registry=ws.registry,
                experiment=experiment,
                champion=None,
                seed=7,
                actor="test",
                engine=on,
            )
            tasks = client.get_task_stream(start=start)
            # xgboost.dask runs one training task (`fn-...`) per worker holding rows
            trained_on = {t["worker"] for t in tasks if str(t["key"]).startswith("fn-")}
            # each worker trained on its part of the rows; here: none did
            expected = set(client.scheduler_info()["workers"]) if on else set()
            assert trained_on == expected, where
        here, there = fits["here"], fits["cluster"]
        # same cuts, same trees: identical metrics (see README for when they differ)
        assert there.metrics == here.metrics
        assert there.version != here.version
        model = load_model(ws.registry, uc.name, there.version)  # SHA-256 checked
        assert type(model.estimator) is XGBClassifier
        reference = load_model(ws.registry, uc.name, here.version)
        np.testing.assert_allclose(
            model.predict(data.test), reference.predict(data.test), rtol=0, atol=1e-12
        )
        predictor, _ = load_version(ws.registry, uc.name, there.version)
        assert predictor.onnx_error is None  # served through ONNX like any XGBoost
    engine.close()


@pytest.mark.slow  # suite budget: one cluster test (gold) stays default
def test_batch_scoring_on_the_workers_equals_embedded(
    cluster: str, tmp_path: Path
) -> None:
    """Each worker loads the champion (digest checked) and scores its part."""
    uc = cancer_use_case()
    ws = make_workspace(tmp_path / "ws")
    report = run(uc, ws, uc.params(), stages=("ingest", "silver", "gold", "train"))
    assert report.champion is not None
    engine = DaskEngine(cluster, partitions=4)
    client = engine.client
    ranges = [(datetime(2000 + i, 1, 1), datetime(2100, 1, 1)) for i in range(3)]
    tables = []
    with tracking(ws.settings.mlflow_uri):
        for on, (start, end) in zip((None, engine), ranges, strict=False):
            begun = time.time()
            client.get_task_stream(start=begun)
            result = score_range(
                ws.lake, uc, ws.registry, start=start, end=end, engine=on
            )
            assert result.rows > 0 and not result.skipped
            tasks = client.get_task_stream(start=begun)
            scored_on = {t["worker"] for t in tasks if "_score_part" in str(t["key"])}
            expected = set(client.scheduler_info()["workers"]) if on else set()
            assert scored_on == expected
            tables.append(
                sorted_table(ws.lake.read(uc.predictions_table), uc.labels.id)
            )
        assert_same_table(tables[1], tables[0])
        for path in ws.settings.artifacts_dir.rglob("model.pkl"):
            path.write_bytes(path.read_bytes() + b"\n")  # a swapped artifact
        start, end = ranges[2]
        with pytest.raises(RegistryError, match="refusing to load"):
            score_range(ws.lake, uc, ws.registry, start=start, end=end, engine=engine)
    engine.close()


def test_an_absent_scheduler_is_a_config_error(tmp_path: Path) -> None:
    ws = cluster_workspace(tmp_path / "ws", f"tcp://127.0.0.1:{free_port()}")
    uc = get_use_case("fraud")
    view = uc.views[0]
    with pytest.raises(ConfigError, match="scheduler_address: no Dask scheduler"):
        ws.engine.map(str, [view.name])
