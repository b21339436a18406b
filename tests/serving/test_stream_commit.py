"""The stream consumer's committer: group commits in scoring order, back-pressure,
and a failed commit stopping the consumer (its batches never acknowledged)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from aistack.serving.stream import _Committer, _Scored


class _Consumer:
    """Records what each commit held; the first commit waits for `release`."""

    def __init__(self, *, fail: bool = False) -> None:
        self.commits: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def commit(self, batches: Sequence[_Scored]) -> None:
        self.started.set()
        self.release.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.commits.append([b.number for b in batches])


def _batch(number: int) -> _Scored:
    return _Scored(number, [{"n": number}], [b"x"], [f"{number}-0"], [0], 0, 0.0)


def test_batches_scored_during_a_commit_share_the_next_one_in_order() -> None:
    consumer = _Consumer()
    committer = _Committer(consumer, depth=2)  # type: ignore[arg-type]
    committer.submit(_batch(1))
    assert consumer.started.wait(10)  # batch 1 is being committed
    committer.submit(_batch(2))
    committer.submit(_batch(3))
    blocked = threading.Thread(target=committer.submit, args=(_batch(4),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # two batches wait: scoring is held back
    consumer.release.set()
    blocked.join(10)
    committer.drain()
    committer.close()
    assert consumer.commits[0] == [1]
    assert [n for c in consumer.commits for n in c] == [1, 2, 3, 4]
    assert len(consumer.commits) < 4  # 2 and 3 went into one commit


def test_a_failed_commit_stops_the_consumer_with_its_error() -> None:
    consumer = _Consumer(fail=True)
    committer = _Committer(consumer)  # type: ignore[arg-type]
    committer.submit(_batch(1))
    consumer.release.set()
    with pytest.raises(OSError, match="disk full"):
        committer.drain()
    with pytest.raises(OSError, match="disk full"):
        committer.submit(_batch(2))
    committer.close()
    assert consumer.commits == []  # nothing acknowledged: delivered again later
