"""One entity's aggregation state as one compact binary blob (format 2).

Layout (little endian): a header (format byte, events, labels, value columns),
then the events as columns (timestamps int64, anonymous bits, ids, each value
column) and the labels as columns (ids, timestamps int64, labels float64). A
column is tagged: `q` int64 or `d` float64 (with a validity bitmap: NULLs stay
NULL) or `j` JSON for anything else (strings, mixed types). Decoding is one
`numpy.frombuffer(...).tolist()` per column instead of one JSON object per
event. A blob of another format is refused, never misread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from aistack.contract import Value
from aistack.errors import ConfigError
from aistack.features.aggregations import Event, event_key

FORMAT = 2
_HEAD = struct.Struct("<BIIH")  # format, events, labels, value columns
_LEN = struct.Struct("<I")


@dataclass
class EntityState:
    """One entity's events (sorted by key) and the labels that arrived, by id."""

    events: list[Event] = field(default_factory=list)
    labels: dict[str, tuple[Value, int, float]] = field(default_factory=dict)

    def add(self, events: Iterable[Event]) -> None:
        """Add events not held yet (idempotent per id: the first one stays)."""
        held = {str(e.id) for e in self.events}
        fresh = []
        for e in events:
            if str(e.id) not in held:
                held.add(str(e.id))
                fresh.append(e)
        if fresh:
            self.events.extend(fresh)
            self.events.sort(key=event_key)

    def label(self, ident: Value, ts_us: int, value: float) -> None:
        """Upsert the label of event `ident` (its event may come later)."""
        self.labels[str(ident)] = (ident, ts_us, value)

    def prune(self, before_us: int) -> None:
        """Drop events and labels of events before `before_us`."""
        self.events = [e for e in self.events if e.ts_us >= before_us]
        self.labels = {k: v for k, v in self.labels.items() if v[1] >= before_us}

    def forget(self, ids: set[str] | None) -> list[str]:
        """Drop the events and labels of `ids` (None: all of them); the ids of
        the events dropped (erasure)."""
        gone = [str(e.id) for e in self.events if ids is None or str(e.id) in ids]
        if ids is None:
            self.events, self.labels = [], {}
        else:
            self.events = [e for e in self.events if str(e.id) not in ids]
            self.labels = {k: v for k, v in self.labels.items() if k not in ids}
        return gone


def _column(values: Sequence[Value], *, numeric: bool = True) -> bytes:
    """`numeric`: ints may come back as floats (values; never for ids)."""
    kinds = {type(v) for v in values} - {type(None)}
    floats = {int, float} if numeric else {float}
    tag = b"q" if kinds <= {int} else b"d" if kinds <= floats else b"j"
    if tag != b"j":
        valid = [v is not None for v in values]
        dtype = np.int64 if tag == b"q" else np.float64
        try:
            array = np.array([0 if v is None else v for v in values], dtype=dtype)
        except OverflowError:  # an int beyond int64
            tag = b"j"
        else:
            return (
                tag
                + np.packbits(np.array(valid, dtype=bool)).tobytes()
                + array.tobytes()
            )
    body = orjson.dumps(list(values))
    return b"j" + _LEN.pack(len(body)) + body


def _read_column(blob: bytes, at: int, n: int) -> tuple[list[Value], int]:
    tag = blob[at : at + 1]
    at += 1
    if tag == b"j":
        (size,) = _LEN.unpack_from(blob, at)
        at += _LEN.size
        return list(orjson.loads(blob[at : at + size])), at + size
    bits = (n + 7) // 8
    valid = np.unpackbits(np.frombuffer(blob, np.uint8, bits, at), count=n)
    at += bits
    dtype = np.int64 if tag == b"q" else np.float64
    values: list[Value] = np.frombuffer(blob, dtype, n, at).tolist()
    if not valid.all():
        values = [
            v if ok else None for v, ok in zip(values, valid.tolist(), strict=True)
        ]
    return values, at + 8 * n


def encode(state: EntityState) -> bytes:
    """The blob of one entity's state."""
    events = state.events
    n = len(events)
    width = len(events[0].values) if events else 0
    labels = list(state.labels.values())
    parts = [
        _HEAD.pack(FORMAT, n, len(labels), width),
        np.array([e.ts_us for e in events], dtype=np.int64).tobytes(),
        np.packbits(np.array([e.anonymous for e in events], dtype=bool)).tobytes(),
        _column([e.id for e in events], numeric=False),
    ]
    parts.extend(_column([e.values[j] for e in events]) for j in range(width))
    parts.append(_column([i for i, _, _ in labels], numeric=False))
    parts.append(np.array([t for _, t, _ in labels], dtype=np.int64).tobytes())
    parts.append(np.array([v for _, _, v in labels], dtype=np.float64).tobytes())
    return b"".join(parts)


def _check(blob: bytes | str, where: str) -> bytes:
    if isinstance(blob, str) or not blob or blob[0] != FORMAT:
        blob = blob.encode() if isinstance(blob, str) else blob
        found = blob[0] if blob else "empty"
        msg = (
            f"online state {where}: blob format {found}, expected {FORMAT}; "
            "rebuild the state (`aistack materialize`)"
        )
        raise ConfigError(msg)
    return blob


@dataclass
class _Parts:
    ts: list[int]
    ids: list[Value]
    columns: list[list[Value]]
    anonymous: list[bool]
    label_ids: list[Value]
    label_ts: list[int]
    label_values: list[float]

    def events(self) -> list[Event]:
        n = len(self.ts)
        rows = list(zip(*self.columns, strict=True)) if self.columns else [()] * n
        new = tuple.__new__
        items = zip(self.ts, self.ids, rows, self.anonymous, strict=True)
        return [new(Event, e) for e in items]


def _parts(blob: bytes) -> _Parts:
    _, n, m, width = _HEAD.unpack_from(blob, 0)
    at = _HEAD.size
    ts = np.frombuffer(blob, np.int64, n, at).tolist()
    at += 8 * n
    bits = (n + 7) // 8
    anonymous = np.unpackbits(np.frombuffer(blob, np.uint8, bits, at), count=n)
    at += bits
    ids, at = _read_column(blob, at, n)
    columns = []
    for _ in range(width):
        column, at = _read_column(blob, at, n)
        columns.append(column)
    label_ids, at = _read_column(blob, at, m)
    label_ts = np.frombuffer(blob, np.int64, m, at).tolist()
    at += 8 * m
    values = np.frombuffer(blob, np.float64, m, at).tolist()
    flags = anonymous.astype(bool).tolist()
    return _Parts(ts, ids, columns, flags, label_ids, label_ts, values)


def decode(blob: bytes | str, *, where: str) -> EntityState:
    """One entity's state from its blob; ConfigError naming `where` for a blob of
    another format (an old state must be rebuilt, never misread)."""
    parts = _parts(_check(blob, where))
    labels = {
        str(i): (i, t, v)
        for i, t, v in zip(
            parts.label_ids, parts.label_ts, parts.label_values, strict=True
        )
    }
    return EntityState(parts.events(), labels)


def events_of(blob: bytes | str, *, where: str, label_index: int | None) -> list[Event]:
    """The events of a blob, sorted by key, their labels put in at `label_index`
    (the read path: one pass, no intermediate state)."""
    parts = _parts(_check(blob, where))
    if label_index is not None and parts.label_ids:
        known = {
            str(i): v for i, v in zip(parts.label_ids, parts.label_values, strict=True)
        }
        column = parts.columns[label_index]
        for k, ident in enumerate(parts.ids):
            found = known.get(str(ident))
            if found is not None:
                column[k] = found
    return parts.events()
