"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
AGE_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))


@dataclass
class ServerMetrics:
    """Request, model and feature metrics exported on /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "aistack_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "aistack_request_latency_seconds",
            "Request latency",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.scores = Histogram(
            "aistack_score",
            "Model scores",
            ["model_version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.lookup = Histogram(
            "aistack_feature_lookup_seconds",
            "Online feature lookup time per request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_age = Histogram(
            "aistack_online_feature_age_seconds",
            "Age of the online feature values used, at the request's time",
            ["view"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.unknown = Counter(
            "aistack_unknown_entities",
            "Requests served with defaults",
            ["view"],
            registry=r,
        )
        self.auth_failures = Counter(
            "aistack_auth_failures",
            "Requests refused for a missing or wrong token",
            registry=r,
        )
        self.model = Gauge(
            "aistack_model_info",
            "The model version being served (1 = current)",
            ["model_name", "model_version", "single_row_path", "batch_path"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.drift_psi = Gauge(
            "aistack_feature_psi",
            "PSI of served values against the champion's training set, per feature",
            ["feature"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.late = Counter(
            "aistack_late_events",
            "Events older than their entity's latest one beyond the allowed lateness",
            ["view"],
            registry=r,
        )
        self.labels = Counter(
            "aistack_labels_applied",
            "Labels attached to events in the online aggregation state",
            registry=r,
        )
        self.shadow_dropped = Counter(
            "aistack_shadow_dropped",
            "Requests not scored by the shadow challenger: queue full or shutting down",
            registry=r,
        )
        self.mismatch = Gauge(
            "aistack_online_offline_mismatch_rate",
            "Share of served values (predictions logged in the last "
            "consistency window) that differ from their offline recomputation "
            "or are missing on one side, per feature",
            ["feature"],
            registry=r,
            multiprocess_mode="max",
        )
        self.compared = Gauge(
            "aistack_online_offline_compared",
            "Logged predictions the last consistency check could recompute offline",
            registry=r,
            multiprocess_mode="max",
        )
        self.swaps = Counter(
            "aistack_model_swaps", "Champion changes picked up", registry=r
        )

    def exposition(self) -> bytes:
        """The text format; merged over workers when running multi-process."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


def observe_many(histogram: Histogram, values: npt.ArrayLike) -> None:
    """Observe many values at once: what `observe` does per value, vectorised.

    prometheus-client has no bulk observe; a 1,000-row batch would otherwise
    cost ~1 ms per histogram. Uses the client's bucket and sum values directly
    (pinned version; a test checks the result equals `observe`).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return
    if data.size == 1:  # a single-row request: the client's own observe is cheaper
        histogram.observe(float(data[0]))
        return
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(
        np.searchsorted(bounds, data, side="left"), minlength=len(bounds)
    )
    histogram._sum.inc(float(data.sum()))
    for bucket, count in zip(histogram._buckets, counts, strict=False):
        if count:
            bucket.inc(int(count))
