"""Rollout guards: what a shadow or canary challenger is judged on, per window.

A window collects one arm's requests, errors, latencies and scores between
checks; `broken_guards` names every guard the challenger's accumulated window
breaks against the champion's latest one, and a `RolloutJudge` says when a
challenger is rolled back or promoted (the classifier and ranking servers
both use it; what a "score" is differs: a model score, the popularity of an
item shown).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

from aistack.contract import RolloutGuards
from aistack.registry.aliases import Registry
from aistack.registry.rollout import Rollout, end_rollout
from aistack.training.profile import bin_shares, psi_from_shares, reference_edges


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


log = logging.getLogger("aistack.api.guards")
SERVER_ACTOR = "aistack-server"
"""Who ends a rollout the guards decided, in the alias history and audit."""


@dataclass(frozen=True)
class Verdict:
    """The end of a rollout the guards decided, and why."""

    status: Literal["rolled_back", "promoted"]
    reason: str


@dataclass
class RolloutJudge:
    """Accumulates a challenger's windows; judges them every `min_requests`."""

    guards: RolloutGuards
    pending: Window = field(default_factory=Window)
    judged: int = 0

    def judge(
        self, champion: Window, challenger: Window, *, mode: str, version: int
    ) -> Verdict | None:
        """Roll back on a broken guard; promote after `promote_after` requests."""
        self.pending.absorb(challenger)
        if self.pending.requests < self.guards.min_requests:
            return None
        reasons = broken_guards(self.guards, self.pending, champion)
        self.judged += self.pending.requests
        self.pending = Window()
        if reasons:
            why = f"automatic rollback of {mode} version {version}: "
            return Verdict("rolled_back", why + "; ".join(reasons))
        if self.judged >= self.guards.promote_after:
            return Verdict(
                "promoted",
                f"{mode} version {version} held every guard for {self.judged} requests",
            )
        return None


def end_as_judged(
    registry: Registry, model: str, verdict: Verdict, rollout: Rollout
) -> None:
    """End `rollout` with the verdict's status and reason, as the server."""
    end_rollout(
        registry,
        model,
        status=verdict.status,
        reason=verdict.reason,
        actor=SERVER_ACTOR,
        judged=rollout,
    )
    (log.warning if verdict.status == "rolled_back" else log.info)(verdict.reason)


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
        shift, p_value = score_shift(
            np.asarray(champion.scores), np.asarray(pending.scores)
        )
        if shift > guards.max_score_psi and p_value < guards.score_shift_alpha:
            reasons.append(
                f"score PSI vs champion {shift:.3f} > {guards.max_score_psi} "
                f"(chi-square p={p_value:.2g} < {guards.score_shift_alpha} over "
                f"{len(pending.scores)} vs {len(champion.scores)} scores)"
            )
    return reasons


def score_shift(
    champion: np.ndarray, challenger: np.ndarray, *, bins: int = 10
) -> tuple[float, float]:
    """PSI of the challenger's scores against the champion's decile bins, and the
    p-value of a chi-square test that both arms' counts come from one
    distribution (bins either arm leaves empty are dropped)."""
    edges = reference_edges(champion, bins)
    shift = psi_from_shares(bin_shares(champion, edges), bin_shares(challenger, edges))
    counts = np.stack(
        [
            np.bincount(
                np.searchsorted(edges, a[np.isfinite(a)], side="right"),
                minlength=len(edges) + 1,
            )
            for a in (champion, challenger)
        ]
    )
    counts = counts[:, counts.sum(axis=0) > 0]
    if counts.shape[1] < 2 or (counts.sum(axis=1) == 0).any():  # noqa: PLR2004
        return shift, 1.0
    p_value = float(stats.chi2_contingency(counts, correction=False).pvalue)
    return shift, p_value
