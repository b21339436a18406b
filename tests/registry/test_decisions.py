"""Rollout decisions are made once: deciders racing on one rollout agree."""

from __future__ import annotations

import threading

from aistack.registry.aliases import Registry
from aistack.registry.rollout import end_rollout, read_rollout, start_rollout
from conftest import other_version


def test_racing_deciders_apply_exactly_one_decision(fraud_copy) -> None:
    """Two workers judge the same canary at once, one says roll back, the other
    promote: the decision lock lets one act; the other finds it decided. The
    rollout's status, the version's result tag and the champion alias agree."""
    ws = fraud_copy
    champion = ws.registry.version_of("fraud", "champion")
    challenger = other_version(ws.registry, "fraud", champion)
    for _ in range(4):
        start_rollout(
            ws.registry, "fraud", mode="canary", share=50, version=challenger, actor="t"
        )
        judged = read_rollout(ws.registry, "fraud")
        gate = threading.Barrier(2)

        def decide(status: str, gate=gate, judged=judged) -> None:
            registry = Registry(ws.lake, ws.settings.mlflow_uri)  # a worker's own
            gate.wait()
            end_rollout(
                registry,
                "fraud",
                status=status,  # type: ignore[arg-type]
                reason=f"worker says {status}",
                actor=f"worker-{status}",
                judged=judged,
            )

        workers = [
            threading.Thread(target=decide, args=(s,))
            for s in ("rolled_back", "promoted")
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        final = read_rollout(ws.registry, "fraud")
        assert final is not None and final.status in ("rolled_back", "promoted")
        assert final.reason == f"worker says {final.status}"
        result = ws.registry.client.get_model_version("fraud", str(challenger)).tags
        assert result["rollout_result"] == f"{final.status}: {final.reason}"
        now = ws.registry.version_of("fraud", "champion")
        assert now == (challenger if final.status == "promoted" else champion)
        assert ws.registry.version_of("fraud", "challenger") is None
        if now != champion:  # put the champion back for the next round
            ws.registry.move("fraud", "champion", champion, actor="t", reason="reset")


def test_a_decision_on_a_superseded_rollout_does_nothing(fraud_copy) -> None:
    ws = fraud_copy
    champion = ws.registry.version_of("fraud", "champion")
    challenger = other_version(ws.registry, "fraud", champion)
    start_rollout(
        ws.registry, "fraud", mode="canary", share=50, version=challenger, actor="t"
    )
    old = read_rollout(ws.registry, "fraud")
    end_rollout(ws.registry, "fraud", status="stopped", reason="by hand", actor="t")
    start_rollout(
        ws.registry, "fraud", mode="shadow", share=100, version=challenger, actor="t"
    )
    # a worker that judged the first rollout decides late: the second is untouched
    end_rollout(
        ws.registry, "fraud", status="promoted", reason="stale", actor="w", judged=old
    )
    now = read_rollout(ws.registry, "fraud")
    assert now is not None and now.active and now.mode == "shadow"
    assert ws.registry.version_of("fraud", "champion") == champion
