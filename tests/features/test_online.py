"""Online store of SQL views: incremental materialization (SQLite, Redis).

Parity of aggregation views is proven in test_realtime.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aistack.features.aggregations import Event
from aistack.features.gold import build_gold
from aistack.features.online import OnlineRow, materialize, open_store
from aistack.features.state import open_event_state
from cancer_usecase import cancer_use_case
from servers import redis_server


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield None
    else:
        with redis_server(tmp_path) as (url, _):
            yield url


def test_materialization_is_incremental(workspace, store_url, tmp_path) -> None:
    uc = cancer_use_case()
    view = uc.views[0]
    lake = workspace.lake
    t0 = datetime(2024, 1, 1)
    rows = {
        "exam_id": [1, 2, 3],
        "patient_id": [1, 2, 3],
        "exam_time": pa.array([t0, t0, t0], pa.timestamp("us")),
        "mean_radius": [1.0, 2.0, 3.0],
        "mean_texture": [1.0] * 3,
        "mean_concavity": [1.0] * 3,
        "worst_area": [1.0] * 3,
        "malignant": [0] * 3,
    }
    lake.write("silver.exams", pa.table(rows), mode="append")
    build_gold(lake, uc, view, written_at=datetime(2026, 1, 1, tzinfo=UTC))
    store = open_store(store_url, tmp_path, uc.name)
    first = materialize(lake, store, uc)[0]
    assert (first.entities, first.skipped) == (3, False)
    assert materialize(lake, store, uc)[0].skipped  # same gold version: nothing read
    later = dict(
        rows,
        exam_id=[4],
        patient_id=[2],
        exam_time=pa.array([t0 + timedelta(hours=1)], pa.timestamp("us")),
        mean_radius=[20.0],
        mean_texture=[1.0],
        mean_concavity=[1.0],
        worst_area=[1.0],
        malignant=[0],
    )
    lake.write("silver.exams", pa.table(later), mode="append")
    build_gold(lake, uc, view, written_at=datetime(2026, 1, 2, tzinfo=UTC))
    second = materialize(lake, store, uc)[0]
    assert (second.entities, second.gold_version) == (1, 1)  # only patient 2 changed
    got = store.get(view.name, [1, 2, 99])
    assert got[0].values[0] == 1.0 and got[1].values[0] == 20.0 and got[2] is None
    assert store.state(view.name).gold_version == 1
    assert (
        pc.max(lake.read(uc.gold_table(view)).column("_written_at")).as_py() is not None
    )


def test_use_cases_sharing_a_sqlite_file_keep_their_own_views(tmp_path) -> None:
    a, b = (open_store(None, tmp_path, name) for name in ("churn", "fraud"))
    a.put("spending", [(1, OnlineRow(10, (1.0,)))])
    b.put("spending", [(1, OnlineRow(20, (2.0,)))])
    assert a.get("spending", [1])[0].values == (1.0,)
    assert b.get("spending", [1])[0].values == (2.0,)
    ea, eb = (open_event_state(None, tmp_path, name) for name in ("churn", "fraud"))
    ea.write("spending", [("1", Event(10, 1, (1.0,)))], {})
    assert eb.size("spending", "1") == 0 and ea.size("spending", "1") == 1


def test_delete_erases_an_entity_and_leaves_the_others(store_url, tmp_path) -> None:
    store = open_store(store_url, tmp_path, "erasure")
    store.put("view", [("a", OnlineRow(1, (1.0,))), ("b", OnlineRow(2, (2.0,)))])
    assert store.delete("view", ["a", "missing"]) == 1
    assert store.get("view", ["a", "b"]) == [None, OnlineRow(2, (2.0,))]
    assert store.delete("view", []) == 0
