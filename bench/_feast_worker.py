"""Feast's point-in-time join on the bench's label rows (runs in the Feast venv).

Started by `bench/training_set.py` with the interpreter of `bench/.venvs/feast`;
it must not import aistack (Feast pins other pandas / pyarrow versions). It reads
a JSON spec naming the Parquet exports of the gold views and the label rows,
builds a throw-away local feature repo (file offline store), runs
`get_historical_features(...).to_df()` and writes the result to Parquet. The last
line on stdout is a JSON object with the seconds and the peak RSS.

    python _feast_worker.py SPEC.json LABELS.parquet OUT.parquet

Feast is imported inside the functions so that its import time is measured apart.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

_DTYPES = ("int64", "float64")


def _peak_mb() -> float:
    """Peak resident memory of this process since it started (VmHWM), in MiB.

    Not `getrusage().ru_maxrss`: Linux carries that over from the parent across
    fork + exec, so a child started by a big parent reports the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
            online=False,
        )
        objects += [entity, feature_view]
        refs += [f"{view['name']}:{f['name']}" for f in view["features"]]
    return objects, refs


def main(argv: list[str]) -> int:
    """Run Feast's historical retrieval once and report it as JSON."""
    spec_path, labels_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    start = time.perf_counter()
    import feast
    import pandas as pd
    from feast import FeatureStore, RepoConfig
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    import_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="feast-repo-") as repo:
        start = time.perf_counter()
        config = RepoConfig(
            project="aistack_bench",
            provider="local",
            registry=str(Path(repo) / "registry.db"),
            offline_store=DaskOfflineStoreConfig(),
            online_store=SqliteOnlineStoreConfig(path=str(Path(repo) / "online.db")),
            entity_key_serialization_version=3,
            repo_path=Path(repo),
        )
        store = FeatureStore(config=config)
        objects, refs = _objects(spec)
        store.apply(objects)
        apply_seconds = time.perf_counter() - start

        labels = pd.read_parquet(labels_path)
        # Feast's entity timestamp column; the label time is naive UTC.
        ts = spec["timestamp"]
        labels = labels.rename(columns={ts: "event_timestamp"})
        labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True)
        rss_before = _peak_mb()

        start = time.perf_counter()
        job = store.get_historical_features(entity_df=labels, features=refs)
        frame = job.to_df()
        seconds = time.perf_counter() - start
        peak = _peak_mb()

    names = [r.split(":", 1)[1] for r in refs]
    frame = frame.rename(columns={"event_timestamp": ts})
    frame[[spec["id"], ts, *names]].to_parquet(out_path, index=False)
    report = {
        "feast": feast.__version__,
        "seconds": seconds,
        "import_seconds": import_seconds,
        "apply_seconds": apply_seconds,
        "rss_before_mb": rss_before,
        "peak_mb": peak,
        "rows_in": len(labels),
        "rows_out": len(frame),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
