"""The score-shift guard: a healthy canary is not rolled back for noise, a
shifted one is, at stated rates (1,000 seeded repeats each)."""

from __future__ import annotations

import numpy as np

from aistack.api.guards import RolloutJudge, Window, broken_guards, score_shift
from aistack.contract import RolloutGuards

REPEATS = 1000


def _rates(challenger_a: float, challenger_b: float, n: int) -> tuple[float, float]:
    """(PSI-only alarm rate, guard rollback rate) over seeded repeats."""
    rng = np.random.default_rng(20261127)
    guards = RolloutGuards()
    psi_alarms = rollbacks = 0
    for _ in range(REPEATS):
        champion = rng.beta(2, 8, 300)  # one evaluation interval of the champion
        challenger = rng.beta(challenger_a, challenger_b, n)
        shift, _ = score_shift(champion, challenger)
        psi_alarms += shift > guards.max_score_psi
        pending = Window(requests=n, latencies=[0.001], scores=list(challenger))
        rollbacks += bool(broken_guards(guards, pending, Window(scores=list(champion))))
    return psi_alarms / REPEATS, rollbacks / REPEATS


def test_a_healthy_canary_is_not_rolled_back_for_small_window_noise() -> None:
    psi_only, guard = _rates(2, 8, 100)  # the same model: same distribution
    assert psi_only > 0.02  # PSI alone over 100 scores: false alarms
    assert guard <= 0.003  # with the test: about score_shift_alpha (0.001)


def test_a_shifted_canary_is_rolled_back() -> None:
    _, guard = _rates(4, 6, 150)  # mean score 0.4 instead of 0.2
    assert guard >= 0.99


def test_the_rollback_reason_names_the_statistics() -> None:
    rng = np.random.default_rng(1)
    champion = Window(scores=list(rng.beta(2, 8, 500)))
    pending = Window(requests=300, latencies=[0.001], scores=list(rng.beta(6, 4, 300)))
    (reason,) = broken_guards(RolloutGuards(), pending, champion)
    assert "score PSI vs champion" in reason and "chi-square p=" in reason


def test_the_judge_waits_for_min_requests_then_rolls_back_or_promotes() -> None:
    rng = np.random.default_rng(7)
    guards = RolloutGuards(min_requests=100, promote_after=200)
    champion = Window(requests=300, latencies=[0.001], scores=list(rng.random(300)))

    def arm(n: int, high: float) -> Window:
        return Window(requests=n, latencies=[0.001], scores=list(rng.random(n) * high))

    judge = RolloutJudge(guards)
    assert judge.judge(champion, arm(60, 1.0), mode="canary", version=2) is None
    assert judge.judge(champion, arm(60, 1.0), mode="canary", version=2) is None
    assert judge.judged == 120 and judge.pending.requests == 0  # judged, held
    promoted = judge.judge(champion, arm(100, 1.0), mode="canary", version=2)
    assert promoted is not None and promoted.status == "promoted"
    assert promoted.reason == "canary version 2 held every guard for 220 requests"
    shifted = RolloutJudge(guards).judge(
        champion, arm(150, 0.3), mode="canary", version=3
    )
    assert shifted is not None and shifted.status == "rolled_back"
    assert shifted.reason.startswith("automatic rollback of canary version 3: ")
    assert "score PSI vs champion" in shifted.reason
