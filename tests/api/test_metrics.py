"""The bulk histogram observe gives exactly what per-value observe gives."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from aistack.api.metrics import LATENCY_BUCKETS, observe_many


def test_observe_many_matches_observe() -> None:
    values = np.random.default_rng(0).exponential(0.01, 5000)
    values[:3] = [LATENCY_BUCKETS[0], LATENCY_BUCKETS[-1], 10.0]  # edges, overflow
    one, bulk = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("h", "h", ["k"], buckets=LATENCY_BUCKETS, registry=one)
    by_bulk = Histogram("h", "h", ["k"], buckets=LATENCY_BUCKETS, registry=bulk)
    for v in values:
        by_one.labels("a").observe(float(v))
    observe_many(by_bulk.labels("a"), values[:2000])
    observe_many(by_bulk.labels("a"), values[2000:2001])  # one value: its own path
    observe_many(by_bulk.labels("a"), values[2001:])
    observe_many(by_bulk.labels("a"), [])

    def lines(registry):
        text = generate_latest(registry).decode()
        return [
            line
            for line in text.splitlines()
            if not line.startswith(("#", "h_created")) and "_sum" not in line
        ]

    assert lines(one) == lines(bulk)
    sums = [
        float(line.split()[-1])
        for r in (one, bulk)
        for line in generate_latest(r).decode().splitlines()
        if line.startswith("h_sum")
    ]
    assert sums[0] == sums[1] or abs(sums[0] - sums[1]) < 1e-9
