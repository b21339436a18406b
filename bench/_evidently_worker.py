"""Evidently's data-drift preset on the bench's frames (runs in the Evidently venv).

Started by `bench/drift.py` with the interpreter of `bench/.venvs/evidently`; it
must not import aistack (Evidently 0.7 does not import under pandas 3). It reads
a JSON spec naming the reference and current Parquet files and the numerical and
categorical columns (the kinds our `detect_drift` chose, so that both tools test
each column as the same kind), runs

    Report(metrics=[DataDriftPreset()], include_tests=True).run(current, reference)

and prints, as the last line on stdout, a JSON object with the seconds, the peak
resident memory and, per column, Evidently's test, drift score, threshold and
verdict. It also reports the kind Evidently would have inferred by itself
(`infer_column_type`), computed after the timed part.

    python _evidently_worker.py SPEC.json

Evidently is imported inside the functions so that its import time is measured
apart from the drift computation.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

# Evidently's stat-test display names -> the names bench/drift.py uses.
TESTS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chi2",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensen_shannon",
}


def _status(key: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the preset on the spec's frames and return the report as a dict."""
    start = time.perf_counter()
    import pandas as pd
    import pyarrow as pa
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.datasets import infer_column_type
    from evidently.presets import DataDriftPreset

    import_seconds = time.perf_counter() - start
    load_start = time.perf_counter()
    reference = pd.read_parquet(spec["reference"])
    current = pd.read_parquet(spec["current"])
    load_seconds = time.perf_counter() - load_start
    frames_mb = (
        reference.memory_usage(deep=True).sum() + current.memory_usage(deep=True).sum()
    ) / 2**20
    load_peak = _status("VmHWM")
    pa.default_memory_pool().release_unused()  # the Parquet reader's leftovers
    reset = _reset_peak()
    before = _status("VmRSS")

    start = time.perf_counter()
    definition = DataDefinition(
        numerical_columns=spec["numerical"], categorical_columns=spec["categorical"]
    )
    snapshot = Report(metrics=[DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")

    verdicts: dict[str, bool] = {}
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift"):
            verdicts[params["column"]] = test["status"] == "FAIL"
    columns: dict[str, dict[str, Any]] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        name = config["column"]
        columns[name] = {
            "method": config["method"],
            "test": TESTS.get(config["method"], config["method"]),
            "score": float(metric["value"]),
            "threshold": float(config["threshold"]),
            "drifted": verdicts.get(name),
        }
    inferred = {
        name: infer_column_type(reference[name]).value for name in reference.columns
    }
    import evidently

    return {
        "evidently": evidently.__version__,
        "pandas": pd.__version__,
        "import_seconds": import_seconds,
        "load_seconds": load_seconds,
        "seconds": seconds,
        "frames_mb": frames_mb,
        "load_peak_mb": load_peak,
        "rss_before_mb": before,
        "peak_mb": peak if reset else max(peak, load_peak),
        "rise_mb": (peak if reset else max(peak, load_peak)) - before,
        "without_frames_mb": (peak if reset else max(peak, load_peak)) - frames_mb,
        "peak_reset": reset,
        "process_peak_mb": max(peak, load_peak),
        "columns": columns,
        "inferred": inferred,
    }


def main() -> int:
    """Read the spec named on the command line and print the JSON report."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no usage telemetry
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
