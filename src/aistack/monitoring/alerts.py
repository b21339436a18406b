"""Alerts: declared rules over observed signals, fired once per episode.

Every transition is a row of `ops.<use case>_alerts` (rule, state firing or
resolved, value, threshold, when, whether the webhook took it). The last row per
rule is the rule's state, so separate processes (server workers, the monitor
job) share episodes: a rule fires when it becomes breached, not on every check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import httpx
import pyarrow as pa

from aistack.contract import AlertRule
from aistack.lake.delta import Lake

log = logging.getLogger("aistack.alerts")
_SCHEMA = pa.schema(
    [
        ("rule", pa.string()),
        ("signal", pa.string()),
        ("state", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
        ("delivered", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class AlertEvent:
    """One change of a rule's state."""

    rule: str
    signal: str
    state: str
    value: float
    threshold: float
    at: datetime
    source: str
    delivered: bool


def alerts_table(use_case: str) -> str:
    """Delta table of a use case's alert events."""
    return f"ops.{use_case}_alerts"


def current_states(lake: Lake, table: str) -> dict[str, str]:
    """The last recorded state of each rule."""
    if not lake.exists(table):
        return {}
    rows = lake.read(table, columns=["rule", "state", "at"]).sort_by("at").to_pylist()
    return {r["rule"]: r["state"] for r in rows}


def _deliver(url: str | None, use_case: str, event: AlertEvent) -> bool:
    if not url:
        return False
    body = {"use_case": use_case, **asdict(event), "at": event.at.isoformat()}
    try:
        response = httpx.post(url, json=body, timeout=5.0)
    except httpx.HTTPError as exc:
        log.warning("alert webhook failed for %s: %s", event.rule, type(exc).__name__)
        return False
    return response.is_success


def evaluate_alerts(
    lake: Lake,
    use_case: str,
    rules: Sequence[AlertRule],
    observed: Mapping[str, float],
    *,
    webhook_url: str | None,
    source: str,
) -> list[AlertEvent]:
    """Record and send the rules whose state changed; returns those events."""
    table = alerts_table(use_case)
    states = current_states(lake, table)
    events = []
    for rule in rules:
        if rule.signal not in observed:
            continue
        value = float(observed[rule.signal])
        breached = value > rule.threshold
        was_firing = states.get(rule.name) == "firing"
        if breached == was_firing:
            continue  # same episode (or still quiet): nothing to say
        event = AlertEvent(
            rule.name,
            rule.signal,
            "firing" if breached else "resolved",
            value,
            rule.threshold,
            datetime.now(UTC),
            source,
            False,
        )
        delivered = _deliver(webhook_url, use_case, event)
        events.append(AlertEvent(**{**asdict(event), "delivered": delivered}))
    if events:
        rows = {k: [getattr(e, k) for e in events] for k in _SCHEMA.names}
        lake.write(table, pa.table(rows, schema=_SCHEMA), mode="append")
    return events


def latest_alerts(lake: Lake, use_case: str) -> list[dict[str, str]]:
    """Each rule's last event, formatted for people (rule, state, value, ...)."""
    table = alerts_table(use_case)
    if not lake.exists(table):
        return []
    rows = lake.read(table).sort_by("at").to_pylist()
    last = {r["rule"]: r for r in rows}
    return [
        {
            "rule": r["rule"],
            "state": r["state"],
            "value": f"{r['value']:.4g}",
            "threshold": f"{r['threshold']:g}",
            "at": r["at"].strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        for r in sorted(last.values(), key=lambda r: r["rule"])
    ]


def firing(lake: Lake, use_case: str) -> list[str]:
    """Rules firing now."""
    return [
        r
        for r, s in current_states(lake, alerts_table(use_case)).items()
        if s == "firing"
    ]
