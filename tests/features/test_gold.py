"""Gold history and point-in-time joins: no leakage, ttl, ties, late backfills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from aistack.contract import FeatureView
from aistack.errors import SchemaError
from aistack.features.gold import WRITTEN_AT, build_gold, point_in_time_join
from aistack.lake.delta import Lake
from cancer_usecase import FEATURES, cancer_use_case

T0 = datetime(2024, 1, 1, 10, 0)
W1 = datetime(2026, 1, 1, tzinfo=UTC)
W2 = datetime(2026, 2, 1, tzinfo=UTC)


def exams(rows: list[tuple[int, datetime, float]]) -> pa.Table:
    """silver.exams rows: (patient, time, mean_radius); other measures fixed."""
    return pa.table(
        {
            "exam_id": list(range(len(rows))),
            "patient_id": [r[0] for r in rows],
            "exam_time": pa.array([r[1] for r in rows], pa.timestamp("us")),
            "mean_radius": [r[2] for r in rows],
            **{f: [1.0] * len(rows) for f in FEATURES[1:]},
            "malignant": [0] * len(rows),
        }
    )


def spine(rows: list[tuple[int, int, datetime]]) -> pa.Table:
    """Label rows: (exam_id, patient, time)."""
    return pa.table(
        {
            "exam_id": [r[0] for r in rows],
            "patient_id": [r[1] for r in rows],
            "exam_time": pa.array([r[2] for r in rows], pa.timestamp("us")),
        }
    )


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(tmp_path)


def build(lake: Lake, written_at: datetime = W1):
    uc = cancer_use_case()
    return uc, build_gold(lake, uc, uc.views[0], written_at=written_at)


def test_no_feature_from_after_the_label_time(lake: Lake) -> None:
    lake.write(
        "silver.exams",
        exams([(1, T0, 1.0), (1, T0 + timedelta(hours=2), 99.0), (2, T0, 5.0)]),
        mode="append",
    )
    uc, _ = build(lake)
    labels = spine(
        [
            (100, 1, T0 + timedelta(hours=1)),  # between the two: must see 1.0
            (101, 1, T0 + timedelta(hours=2)),  # at the second: sees 99.0
            (102, 1, T0 - timedelta(hours=1)),  # before any: nothing
            (103, 2, T0 + timedelta(minutes=5)),
        ]
    )
    out = point_in_time_join(lake, uc, labels, as_of=W2).to_pydict()
    assert out["exam_id"] == [100, 101, 102, 103]  # order and count kept
    assert out["mean_radius"] == [1.0, 99.0, None, 5.0]
    assert out["_missing_exam_measures"] == [False, False, True, False]


def test_ttl_keeps_the_row_with_null_features(lake: Lake) -> None:
    lake.write("silver.exams", exams([(1, T0, 1.0)]), mode="append")
    uc, _ = build(lake)
    labels = spine(
        [(1, 1, T0 + timedelta(hours=23)), (2, 1, T0 + timedelta(days=2)), (3, 9, T0)]
    )
    out = point_in_time_join(lake, uc, labels, as_of=W2).to_pydict()
    assert out["exam_id"] == [1, 2, 3]
    assert out["mean_radius"] == [1.0, None, None]  # ttl is one day; 9 is unknown
    assert out["_missing_exam_measures"] == [False, True, True]


def test_same_entity_and_time_resolve_deterministically(lake: Lake) -> None:
    lake.write("silver.exams", exams([(1, T0, 3.0), (1, T0, 7.0)]), mode="append")
    uc, result = build(lake)
    assert result.new_rows == 1  # collapsed within one build: largest values win
    out = point_in_time_join(lake, uc, spine([(1, 1, T0)]), as_of=W2).to_pydict()
    assert out["mean_radius"] == [7.0]


def test_late_backfill_does_not_leak_into_an_earlier_as_of(lake: Lake) -> None:
    lake.write("silver.exams", exams([(1, T0, 1.0)]), mode="append")
    uc, first = build(lake, W1)
    # a backfill arrives later: an older event, and a correction of the 10:00 value
    lake.write(
        "silver.exams",
        exams([(1, T0, 2.0), (1, T0 - timedelta(hours=2), 0.5)]),
        mode="overwrite",
    )
    _, second = build(lake, W2)
    assert (first.new_rows, second.new_rows) == (1, 2)  # only new or changed rows
    labels = spine([(1, 1, T0 - timedelta(hours=1)), (2, 1, T0 + timedelta(hours=1))])
    before = point_in_time_join(
        lake, uc, labels, as_of=W1 + timedelta(days=1)
    ).to_pydict()
    after = point_in_time_join(
        lake, uc, labels, as_of=W2 + timedelta(days=1)
    ).to_pydict()
    assert before["mean_radius"] == [None, 1.0]  # as known on W1 + 1 day
    assert after["mean_radius"] == [0.5, 2.0]  # the backfill and the correction


def test_gold_rebuild_on_same_inputs_changes_nothing(lake: Lake) -> None:
    lake.write("silver.exams", exams([(1, T0, 1.0)]), mode="append")
    uc, first = build(lake)
    _, again = build(lake, W2)
    assert again.skipped and again.version == first.version
    table = lake.read(uc.gold_table(uc.views[0]))
    assert table.num_rows == 1
    assert table.schema.field(WRITTEN_AT).type == pa.timestamp("us", tz="UTC")


def test_a_query_missing_features_is_a_schema_error(lake: Lake) -> None:
    lake.write("silver.exams", exams([(1, T0, 1.0)]), mode="append")
    uc = cancer_use_case()
    view = uc.views[0]
    broken = FeatureView(
        name=view.name,
        entity=view.entity,
        features=view.features,
        query="SELECT patient_id, exam_time AS event_time FROM silver.exams",
        inputs=view.inputs,
        ttl=view.ttl,
    )
    with pytest.raises(SchemaError, match="does not return mean_radius"):
        build_gold(lake, uc, broken, written_at=W1)
