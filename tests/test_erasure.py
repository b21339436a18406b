"""`forget` reaches the online aggregation state (the subject's own entity and
the subject's events in other entities' windows, SQLite and Redis) and keeps
`ops.batch_accounting` true (bronze = silver + quarantine per batch, and
silver = silver_rows - replaced_rows on a latest-wins table), on the test-only
visits use case (tests/visits_usecase.py)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from aistack.erasure import forget
from aistack.features.realtime import bootstrap
from aistack.features.state import open_event_state
from aistack.governance.audit import read
from aistack.governance.pii import PiiCipher
from aistack.lake.silver import ACCOUNTING
from aistack.runner import run
from aistack.settings import load_settings
from aistack.workspace import Workspace
from servers import redis_server
from visits_usecase import (
    SUBJECT,
    patient_visits,
    use_case,
    versions_use_case,
    without_subject,
)


def visit_ids(state, view: str, entity: str) -> set:
    return {e.id for e in state.read(view, [entity], label_index=None)[0]}


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_forget_erases_aggregation_state_and_recounts_batches(
    backend, tmp_path, pii_key
) -> None:
    with (
        redis_server(tmp_path) if backend == "redis" else contextlib.nullcontext()
    ) as server:
        url = server[0] if server else None
        ws = Workspace(load_settings(workspace=tmp_path / "ws", seed=7, online_url=url))
        run(use_case, ws, use_case.params(), stages=("ingest", "silver"))
        assert ws.lake.rows("quarantine.visits") == 1  # the subject's visit 207
        state = open_event_state(url, ws.settings.workspace, use_case.name)
        for view in use_case.aggregation_views:
            bootstrap(ws.lake, state, use_case, view)
        cipher = PiiCipher(bytes.fromhex(pii_key))
        subject, other = (str(p) for p in cipher.pseudonym([SUBJECT, "NID-000008"]))
        mine = {k for k in range(7, 400, 40) if k != 207}  # the subject's, in silver
        assert visit_ids(state, "patient_visits", subject) == mine
        assert mine < visit_ids(state, "clinic_load", "2")  # all at clinic 2
        clinic_before = visit_ids(state, "clinic_load", "2")

        result = forget(
            ws, use_case, SUBJECT, cipher=cipher, now=datetime.now(UTC), principal="dpo"
        )

        assert result.state_events == 2 * len(mine)
        assert state.size(patient_visits.name, subject) == 0
        assert visit_ids(state, "clinic_load", "2") == clinic_before - mine
        assert len(visit_ids(state, "patient_visits", other)) == 10  # untouched
        assert len(visit_ids(state, "clinic_load", "3")) == 80
        accounting = pl.from_arrow(ws.lake.read(ACCOUNTING))
        assert result.accounted_batches == accounting.height == 4
        assert (
            accounting["bronze_rows"]
            == accounting["silver_rows"] + accounting["quarantined_rows"]
        ).all()
        assert accounting["bronze_rows"].sum() == ws.lake.rows("bronze.visits") == 390
        assert accounting["silver_rows"].sum() == ws.lake.rows("silver.visits") == 390
        assert accounting["quarantined_rows"].sum() == 0
        assert ws.lake.rows("quarantine.visits") == 0
        erased = [r for r in read(ws.audit.path) if r["action"] == "erase"]
        assert erased[-1]["details"]["state_events"] == 18
        assert erased[-1]["details"]["accounted_batches"] == 4


COUNTS = ("bronze_rows", "silver_rows", "quarantined_rows", "replaced_rows")


def counts(ws: Workspace) -> pl.DataFrame:
    """`ops.batch_accounting`'s counts per table and batch."""
    accounting = pl.from_arrow(ws.lake.read(ACCOUNTING))
    assert isinstance(accounting, pl.DataFrame)
    return accounting.select("table", "_batch_id", *COUNTS).sort("table", "_batch_id")


def test_forget_on_a_latest_wins_table_keyed_by_the_subject_lowers_replaced_rows(
    tmp_path, pii_key
) -> None:
    """The subject's patient records (key: its pseudonym, latest wins) had
    replaced earlier versions: after `forget` the accounting is what a lake that
    never saw the subject records, and forgetting again changes nothing."""
    ws = Workspace(load_settings(workspace=tmp_path / "ws", seed=7))
    uc = versions_use_case
    run(uc, ws, uc.params(), stages=("ingest", "silver"))
    held = counts(ws).filter(pl.col("table") == "silver.patients")
    assert held["replaced_rows"].to_list() == [0, 2, 1, 2]  # the subject: 1, 1, 1
    assert ws.lake.rows("quarantine.patients") == 3  # the subject's: 2
    cipher = PiiCipher(bytes.fromhex(pii_key))

    result = forget(ws, uc, SUBJECT, cipher=cipher, now=datetime.now(UTC))

    assert result.rows["bronze.patients"] == 6
    assert result.rows["silver.patients"] == 1
    after = counts(ws)
    patients = after.filter(pl.col("table") == "silver.patients")
    assert (
        ws.lake.rows("silver.patients")
        == patients["silver_rows"].sum() - patients["replaced_rows"].sum()
        == 39
    )
    assert (patients["replaced_rows"] <= patients["silver_rows"]).all()
    clean = Workspace(load_settings(workspace=tmp_path / "clean", seed=7))
    run(
        replace(uc, read_sources=without_subject),
        clean,
        uc.params(),
        stages=("ingest", "silver"),
    )
    assert_frame_equal(after, counts(clean))
    versions = {t.name: ws.lake.version(t.name) for t in ws.lake.tables()}

    again = forget(ws, uc, SUBJECT, cipher=cipher, now=datetime.now(UTC))

    assert (again.total_rows, again.accounted_batches) == (0, 0)
    assert_frame_equal(counts(ws), after)
    assert {t.name: ws.lake.version(t.name) for t in ws.lake.tables()} == versions
