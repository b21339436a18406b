"""Feast's online path on the bench's replay (runs in the Feast venv).

Started by `bench/realtime.py` with the interpreter of `bench/.venvs/feast`; it
must not import aistack (Feast pins other pandas / pyarrow versions). It reads a
JSON spec naming the Parquet exports of the gold views (one row per event, the
features computed offline at that event) and the replayed requests, builds a
throw-away local feature repo (file offline store, SQLite online store) and,
for each refresh plan of the spec:

* `materialize` the gold rows up to the replay's start (the state as of then);
* replays the requests in time order: before a request, `materialize_incremental`
  up to each refresh time the replay's clock has passed (plan "once": none);
  then one `get_online_features` call for the request's entities (both views),
  timed.

Writes the values served (one row per plan and request) to Parquet. The last
line on stdout is a JSON object with the timings.

    python _feast_realtime_worker.py SPEC.json OUT.parquet
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

_DTYPES = ("int64", "float64")


def _objects(spec: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """Feast entities and feature views of the spec, and the feature references."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    dtypes = dict(zip(_DTYPES, (Int64, Float64), strict=True))
    objects: list[Any] = []
    refs: list[str] = []
    for view in spec["views"]:
        entity = Entity(
            name=view["entity"], join_keys=[view["entity"]], value_type=ValueType.INT64
        )
        source = FileSource(
            name=f"{view['name']}_source",
            path=view["path"],
            timestamp_field=view["event_time"],
            created_timestamp_column=view["created"],
        )
        schema = [
            Field(name=f["name"], dtype=dtypes[f["dtype"]]) for f in view["features"]
        ]
        feature_view = FeatureView(
            name=view["name"],
            entities=[entity],
            ttl=timedelta(seconds=view["ttl_seconds"]),
            schema=schema,
            source=source,
            online=True,
        )
        objects += [entity, feature_view]
        refs += [f"{view['name']}:{f['name']}" for f in view["features"]]
    return objects, refs


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    at = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[at]


def _utc(text: str) -> datetime:
    from datetime import UTC

    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def run_plan(
    spec: dict[str, Any],
    plan: dict[str, Any],
    requests: Any,  # noqa: ANN401  (a pandas DataFrame: pandas is imported late)
    repo: Path,
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """One refresh plan over the whole replay, in a fresh repo and online store."""
    from feast import FeatureStore, RepoConfig
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    config = RepoConfig(
        project="aistack_bench_rt",
        provider="local",
        registry=str(repo / "registry.db"),
        offline_store=DaskOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(repo / "online.db")),
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    store = FeatureStore(config=config)
    objects, refs = _objects(spec)
    start = time.perf_counter()
    store.apply(objects)
    apply_seconds = time.perf_counter() - start

    as_of = _utc(spec["as_of"])
    start = time.perf_counter()
    store.materialize(start_date=_utc(spec["history_start"]), end_date=as_of)
    first_materialize = time.perf_counter() - start

    refreshes = [_utc(t) for t in plan["refresh"]]
    names = [r.split(":", 1)[1] for r in refs]
    entities = [v["entity"] for v in spec["views"]]
    out: dict[str, list[Any]] = {"transaction_id": [], "latency_us": []}
    out.update({n: [] for n in names})
    refresh_seconds: list[float] = []
    latencies: list[float] = []
    ids = requests["transaction_id"].tolist()
    times = requests["event_time"].tolist()
    keys = {e: requests[e].tolist() for e in entities}
    for i, ident in enumerate(ids):
        now = times[i]
        while refreshes and refreshes[0] <= now:
            due = refreshes.pop(0)
            start = time.perf_counter()
            store.materialize_incremental(end_date=due)
            refresh_seconds.append(time.perf_counter() - start)
        row = {e: int(keys[e][i]) for e in entities}
        start = time.perf_counter()
        found = store.get_online_features(features=refs, entity_rows=[row]).to_dict()
        seconds = time.perf_counter() - start
        latencies.append(seconds)
        out["transaction_id"].append(int(ident))
        out["latency_us"].append(seconds * 1e6)
        for n in names:
            value = found[n][0]
            out[n].append(None if value is None else float(value))
    report = {
        "plan": plan["name"],
        "calls": len(latencies),
        "apply_seconds": apply_seconds,
        "first_materialize_seconds": first_materialize,
        "refreshes": len(refresh_seconds),
        "refresh_mean_seconds": (
            sum(refresh_seconds) / len(refresh_seconds) if refresh_seconds else 0.0
        ),
        "refresh_total_seconds": sum(refresh_seconds),
        "p50_ms": _percentile(latencies, 50) * 1e3,
        "p99_ms": _percentile(latencies, 99) * 1e3,
        "mean_ms": sum(latencies) / max(len(latencies), 1) * 1e3,
    }
    return out, report


def main(argv: list[str]) -> int:
    """Every refresh plan of the spec; values to Parquet, timings as JSON."""
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    start = time.perf_counter()
    import feast
    import pandas as pd

    import_seconds = time.perf_counter() - start
    requests = pd.read_parquet(spec["requests"])
    requests["event_time"] = pd.to_datetime(requests["event_time"], utc=True)
    requests = requests.sort_values(["event_time", "transaction_id"], kind="stable")
    requests["event_time"] = [t.to_pydatetime() for t in requests["event_time"]]
    frames = []
    reports = []
    with tempfile.TemporaryDirectory(prefix="feast-rt-repo-") as tmp:
        for plan in spec["plans"]:
            values, report = run_plan(spec, plan, requests, Path(tmp) / plan["name"])
            frame = pd.DataFrame(values)
            frame.insert(0, "plan", plan["name"])
            frames.append(frame)
            reports.append(report)
    pd.concat(frames, ignore_index=True).to_parquet(out_path, index=False)
    print(
        json.dumps(
            {
                "feast": feast.__version__,
                "import_seconds": import_seconds,
                "plans": reports,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
