"""File locks: held across threads and processes, and removable on release."""

from __future__ import annotations

import threading
import time

from aistack.locks import file_lock


def test_a_removed_lock_file_still_serialises_its_waiters(tmp_path) -> None:
    """With `remove`, the holder deletes the file on release; a waiter that got
    the lock of the deleted file takes it again on a fresh one, so two holders
    never overlap and no file is left behind."""
    path = tmp_path / "port.lock"
    inside: list[int] = []
    overlaps: list[int] = []

    def hold(k: int) -> None:
        for _ in range(20):
            with file_lock(path, remove=True):
                inside.append(k)
                if len(inside) > 1:
                    overlaps.append(k)
                assert path.exists()
                time.sleep(0.001)
                inside.remove(k)

    threads = [threading.Thread(target=hold, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert not path.exists()
