"""Rollout guards: what a shadow or canary challenger is judged on, per window.

A window collects one arm's requests, errors, latencies and scores between
checks; `broken_guards` names every guard the challenger's accumulated window
breaks against the champion's latest one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aistack.contract import RolloutGuards
from aistack.training.profile import psi


@dataclass
class Window:
    """Requests, errors, latencies and scores of one arm since the last check."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self, n: int, seconds: float, scores: Sequence[float], errors: int = 0
    ) -> None:
        """Add one scoring call (n rows, its duration, its scores)."""
        with self.lock:
            self.requests += n
            self.errors += errors
            self.latencies.append(seconds)
            self.scores.extend(scores)

    def take(self) -> Window:
        """This window's contents; the window starts over."""
        with self.lock:
            snap = Window(self.requests, self.errors, self.latencies, self.scores)
            self.requests, self.errors, self.latencies, self.scores = 0, 0, [], []
        return snap

    def absorb(self, other: Window) -> None:
        """Add another window's contents (accumulate until enough to judge)."""
        self.requests += other.requests
        self.errors += other.errors
        self.latencies += other.latencies
        self.scores += other.scores


def broken_guards(
    guards: RolloutGuards, pending: Window, champion: Window
) -> list[str]:
    """Why the challenger (its `pending` window) fails, empty when it holds."""
    reasons = []
    error_rate = pending.errors / pending.requests
    if error_rate > guards.max_error_rate:
        reasons.append(f"error rate {error_rate:.3f} > {guards.max_error_rate}")
    p99 = (
        float(np.percentile(pending.latencies, 99)) * 1000 if pending.latencies else 0.0
    )
    if p99 > guards.max_latency_p99_ms:
        reasons.append(f"latency p99 {p99:.1f} ms > {guards.max_latency_p99_ms} ms")
    if pending.scores and champion.scores:
        shift = psi(np.asarray(champion.scores), np.asarray(pending.scores))
        if shift > guards.max_score_psi:
            reasons.append(
                f"score PSI vs champion {shift:.3f} > {guards.max_score_psi}"
            )
    return reasons
