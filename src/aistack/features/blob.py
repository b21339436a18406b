"""One entity's aggregation state as one compact binary blob (format 3).

Layout (little endian): a header (format byte, events, labels, value columns),
then the events as columns (timestamps int64, anonymous flags, ids, each value
column) and the labels as columns (ids, timestamps int64, labels float64). A
column is tagged: `q` int64 or `d` float64 (with one validity byte per value:
NULLs stay NULL) or `j` JSON for anything else (strings, mixed types). Flags
and validity take a byte per event (format 2 packed them in bits), so every
numeric part of a blob is a plain array: decoding is one `numpy.frombuffer`
per column, and the common write (new events after the held ones, the oldest
pruned) is a join of byte slices of the old blob and the new values, with no
column decoded. A blob of another format is refused, never misread.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import orjson

from aistack.contract import Value
from aistack.errors import ConfigError
from aistack.features.aggregations import Event, event_key

FORMAT = 3
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


@dataclass
class Col:
    """One column, columnar: `q` (int64) or `d` (float64) with a validity mask, or
    `j`: an object array of Python values (None: NULL)."""

    tag: bytes
    data: np.ndarray
    valid: np.ndarray  # bool: not NULL

    def python(self) -> list[Value]:
        """The values as Python objects (None for NULL)."""
        values: list[Value] = self.data.tolist()
        if self.tag == b"j" or self.valid.all():
            return values
        return [
            v if ok else None for v, ok in zip(values, self.valid.tolist(), strict=True)
        ]

    def take(self, index: np.ndarray) -> Col:
        """The values at `index` (positions or a mask)."""
        return Col(self.tag, self.data[index], self.valid[index])

    def __len__(self) -> int:
        return len(self.data)


def _objects(values: Sequence[Value]) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


def col_of(values: Sequence[Value], *, numeric: bool = True) -> Col:
    """The column of Python values. `numeric`: ints and floats together become
    `d` (values; never for ids, which must come back as they went in)."""
    kinds = {type(v) for v in values} - {type(None)}
    floats = {int, float} if numeric else {float}
    tag = b"q" if kinds <= {int} else b"d" if kinds <= floats else b"j"
    if tag != b"j":
        valid = np.fromiter((v is not None for v in values), bool, len(values))
        dtype = np.int64 if tag == b"q" else np.float64
        try:
            array = np.array([0 if v is None else v for v in values], dtype=dtype)
        except OverflowError:  # an int beyond int64
            pass
        else:
            return Col(tag, array, valid)
    return Col(b"j", _objects(values), np.ones(len(values), dtype=bool))


def concat(a: Col, b: Col, *, numeric: bool = True) -> Col:
    """`a` then `b`, in the narrowest tag that holds both (as `col_of` would)."""
    if a.tag == b.tag != b"j":
        return Col(
            a.tag, np.concatenate([a.data, b.data]), np.concatenate([a.valid, b.valid])
        )
    if numeric and {a.tag, b.tag} <= {b"q", b"d"}:
        data = np.concatenate([a.data.astype(np.float64), b.data.astype(np.float64)])
        return Col(b"d", data, np.concatenate([a.valid, b.valid]))
    return col_of([*a.python(), *b.python()], numeric=numeric)


def _col_bytes(col: Col) -> bytes:
    if col.tag == b"j":
        body = orjson.dumps(col.data.tolist())
        return b"j" + _LEN.pack(len(body)) + body
    data = np.where(col.valid, col.data, 0) if not col.valid.all() else col.data
    return col.tag + col.valid.astype(np.bool_).tobytes() + data.tobytes()


def _column(values: Sequence[Value], *, numeric: bool = True) -> bytes:
    return _col_bytes(col_of(values, numeric=numeric))


def _read_col(blob: bytes, at: int, n: int) -> tuple[Col, int]:
    tag = blob[at : at + 1]
    at += 1
    if tag == b"j":
        (size,) = _LEN.unpack_from(blob, at)
        at += _LEN.size
        values = orjson.loads(blob[at : at + size])
        column = Col(
            b"j", _read_only(_objects(values)), _read_only(np.ones(n, dtype=bool))
        )
        return column, at + size
    valid = np.frombuffer(blob, np.bool_, n, at)  # read-only, as the data
    at += n
    dtype = np.int64 if tag == b"q" else np.float64
    return Col(tag, np.frombuffer(blob, dtype, n, at), valid), at + 8 * n


def _read_column(blob: bytes, at: int, n: int) -> tuple[list[Value], int]:
    col, at = _read_col(blob, at, n)
    return col.python(), at


def encode(state: EntityState) -> bytes:
    """The blob of one entity's state."""
    events = state.events
    n = len(events)
    width = len(events[0].values) if events else 0
    labels = list(state.labels.values())
    parts = [
        _HEAD.pack(FORMAT, n, len(labels), width),
        np.array([e.ts_us for e in events], dtype=np.int64).tobytes(),
        np.array([e.anonymous for e in events], dtype=np.bool_).tobytes(),
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
    f = frame(blob, where="")
    return _Parts(
        f.ts.tolist(),
        f.ids.python(),
        [c.python() for c in f.values],
        f.anonymous.tolist(),
        f.label_ids.python(),
        f.label_ts.tolist(),
        f.label_values.tolist(),
    )


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


@dataclass
class Frame:
    """One entity's state, columnar: events sorted by key, then labels."""

    ts: np.ndarray  # int64
    anonymous: np.ndarray  # bool
    ids: Col
    values: list[Col]
    label_ids: Col
    label_ts: np.ndarray  # int64
    label_values: np.ndarray  # float64
    labels: bytes = b""  # the labels' encoded bytes, as read (reused unchanged)

    def take(self, index: np.ndarray) -> Frame:
        """The events at `index` (labels unchanged)."""
        return replace(
            self,
            ts=self.ts[index],
            anonymous=self.anonymous[index],
            ids=self.ids.take(index),
            values=[c.take(index) for c in self.values],
        )

    def labelled(self, label_index: int | None) -> list[Col]:
        """The value columns, the arrived labels put in at `label_index`."""
        if label_index is None or not len(self.label_ids) or not len(self.ts):
            return self.values
        column = self.values[label_index]
        if self.ids.tag == self.label_ids.tag == b"q":
            order = np.argsort(self.label_ids.data, kind="stable")
            keys = self.label_ids.data[order]
            at = np.minimum(np.searchsorted(keys, self.ids.data), len(keys) - 1)
            hit = keys[at] == self.ids.data
            if not hit.any():
                return self.values
            data = column.data.astype(np.float64)
            data[hit] = self.label_values[order[at[hit]]]
            merged = Col(b"d", data, column.valid | hit)
        else:  # ids of other kinds: by their text, as the event path does
            known = {
                str(i): v
                for i, v in zip(
                    self.label_ids.python(), self.label_values.tolist(), strict=True
                )
            }
            values = column.python()
            for k, ident in enumerate(self.ids.python()):
                found = known.get(str(ident))
                if found is not None:
                    values[k] = found
            merged = col_of(values)
        return [merged if j == label_index else c for j, c in enumerate(self.values)]


def frame(blob: bytes | str, *, where: str) -> Frame:
    """One entity's state from its blob, columnar (no Python object per event).

    Not cached here: a request that reads an entity's state for its features
    hands the frame to its own write (`StateWrite.frames`), which finds the
    blob unchanged. A process-wide cache of parsed frames (64 MiB of blobs,
    ~26,000 frames of ~8 objects each) was measured to make the collector's
    full passes stall serving 60-120 ms every few seconds (p99 at 1,000
    requests/s on 2 workers 24-40 ms with it, 8-14 ms without).
    """
    return _parse(_check(blob, where))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _parse(blob: bytes) -> Frame:
    _, n, m, width = _HEAD.unpack_from(blob, 0)
    at = _HEAD.size
    ts = np.frombuffer(blob, np.int64, n, at)
    at += 8 * n
    anonymous = np.frombuffer(blob, np.bool_, n, at)
    at += n
    ids, at = _read_col(blob, at, n)
    values = []
    for _ in range(width):
        column, at = _read_col(blob, at, n)
        values.append(column)
    labels_at = at
    label_ids, at = _read_col(blob, at, m)
    label_ts = np.frombuffer(blob, np.int64, m, at)
    at += 8 * m
    label_values = np.frombuffer(blob, np.float64, m, at)
    return Frame(
        ts,
        anonymous,
        ids,
        values,
        label_ids,
        label_ts,
        label_values,
        blob[labels_at:],
    )


def frame_bytes(f: Frame) -> bytes:
    """The blob of a columnar state."""
    n, m = len(f.ts), len(f.label_ts)
    parts = [
        _HEAD.pack(FORMAT, n, m, len(f.values) if n else 0),
        f.ts.astype(np.int64).tobytes(),
        f.anonymous.astype(np.bool_).tobytes(),
        _col_bytes(f.ids),
    ]
    if n:
        parts.extend(_col_bytes(c) for c in f.values)
    parts.append(_col_bytes(f.label_ids))
    parts.append(f.label_ts.astype(np.int64).tobytes())
    parts.append(f.label_values.astype(np.float64).tobytes())
    return b"".join(parts)


def _empty_frame(width: int) -> Frame:
    none = np.empty(0, dtype=np.int64)
    col = Col(b"q", none, np.empty(0, dtype=bool))
    return Frame(
        none,
        np.empty(0, dtype=bool),
        col,
        [col] * width,
        col,
        none,
        np.empty(0, dtype=np.float64),
    )


def add_events(
    blob: bytes | str | None,
    events: Sequence[Event],
    cutoff: int | None,
    *,
    where: str,
    parsed: Frame | None = None,
) -> bytes | str | None:
    """The blob with `events` added (idempotent per id: the first one stays) and
    events and labels before `cutoff` dropped; None when nothing is left, and
    `blob` itself when nothing changed. Columnar: the same result as
    `decode` + `EntityState.add` + `prune` + `encode`, without a Python object
    per stored event. `parsed`: `blob`'s frame, when the caller has it."""
    width = len(events[0].values) if events else 0
    if blob is None:
        held = _empty_frame(width)
    else:
        held = frame(blob, where=where) if parsed is None else parsed
    appended = (
        None if blob is None else _appended(_check(blob, where), held, events, cutoff)
    )
    if appended is not None:
        return appended
    width = len(held.values) if len(held.ts) else width
    fresh = _fresh(held.ids, events)
    changed = bool(fresh)
    state = held
    if fresh:
        new = Frame(
            np.fromiter((e.ts_us for e in fresh), np.int64, len(fresh)),
            np.fromiter((e.anonymous for e in fresh), bool, len(fresh)),
            col_of([e.id for e in fresh], numeric=False),
            [col_of([e.values[j] for e in fresh]) for j in range(width)],
            held.label_ids,
            held.label_ts,
            held.label_values,
        )
        state = _sorted(_append(held, new))
    if cutoff is not None:
        keep = state.ts >= cutoff
        keep_labels = state.label_ts >= cutoff
        if not keep.all() or not keep_labels.all():
            changed = True
            state = replace(
                state.take(keep),
                label_ids=state.label_ids.take(keep_labels),
                label_ts=state.label_ts[keep_labels],
                label_values=state.label_values[keep_labels],
            )
    if not changed:
        return blob
    if not len(state.ts) and not len(state.label_ts):
        return None
    return frame_bytes(state)


def _appendable(held: Frame, events: Sequence[Event], cutoff: int | None) -> bool:
    """New events with integer ids, all after the held ones in key order and none
    past the retention, onto held events with integer ids (no anonymous one)."""
    if not len(held.ts) or not events or held.ids.tag != b"q":
        return False
    ids = [e.id for e in events]
    if not all(type(i) is int and _I64[0] <= i <= _I64[1] for i in ids):
        return False
    if any(e.anonymous for e in events):
        return False
    keys = [
        (int(held.ts[-1]), int(held.ids.data[-1])),
        *((e.ts_us, e.id) for e in events),
    ]
    if not all(a < b for a, b in itertools.pairwise(keys)):
        return False  # out of order
    if cutoff is not None and events[0].ts_us < cutoff:
        return False  # a new event already past the retention
    distinct = len(set(ids)) == len(ids) and not held.anonymous.any()
    return distinct and not _any_held(held.ids.data, ids)


_FEW = 4
_I64 = (-(2**63), 2**63 - 1)


def _any_held(held: np.ndarray, ids: Sequence[Value]) -> bool:
    if len(ids) <= _FEW:  # one comparison pass per id beats building a set
        return any(bool((held == i).any()) for i in ids)
    known = set(held.tolist())
    return any(i in known for i in ids)


def _new_numeric(tag: bytes, values: list[Value]) -> tuple[bytes, bytes] | None:
    """(validity, data) bytes of new values for a held column of `tag`, or None
    when they do not fit it unchanged (the general path then widens it)."""
    if tag == b"q":
        fits = all(
            v is None or (type(v) is int and _I64[0] <= v <= _I64[1]) for v in values
        )
        dtype: type = np.int64
    elif tag == b"d":
        fits = all(v is None or type(v) is float or type(v) is int for v in values)
        dtype = np.float64
    else:
        return None
    if not fits:
        return None
    valid = bytes(v is not None for v in values)
    code = "q" if dtype is np.int64 else "d"
    return valid, struct.pack(f"<{len(values)}{code}", *(v or 0 for v in values))


def _appended(
    blob: bytes, held: Frame, events: Sequence[Event], cutoff: int | None
) -> bytes | None:
    """The common write as byte slices: `_appendable` events onto numeric
    columns, the pruned events a prefix (events are sorted by time), each
    column's kept part copied from `blob` as is and the new values appended.
    The same bytes as the general path; None when the write is not that one."""
    if not _appendable(held, events, cutoff):
        return None
    new = [
        _new_numeric(c.tag, [e.values[j] for e in events])
        for j, c in enumerate(held.values)
    ]
    if any(part is None for part in new):
        return None
    k = len(events)
    start = 0 if cutoff is None else int(np.searchsorted(held.ts, cutoff, "left"))
    prune = (
        cutoff is not None
        and len(held.label_ts) > 0
        and bool((held.label_ts < cutoff).any())
    )
    columns = [
        (b"q", b"\x01" * k, struct.pack(f"<{k}q", *(e.id for e in events))),
        *(
            (col.tag, *fresh)
            for col, fresh in zip(held.values, new, strict=True)
            if fresh is not None
        ),
    ]
    times = struct.pack(f"<{k}q", *(e.ts_us for e in events))
    return _spliced(blob, held, start, cutoff, times, columns, prune_labels=prune)


def _spliced(  # noqa: PLR0917  (the parts of one blob)
    blob: bytes,
    held: Frame,
    start: int,
    cutoff: int | None,
    times: bytes,
    columns: Sequence[tuple[bytes, bytes, bytes]],
    *,
    prune_labels: bool,
) -> bytes:
    """`blob` with its first `start` events dropped and new events appended:
    their `times` (int64 bytes) and per column (the ids first) its tag, the
    new validity bytes and value bytes, each held column's kept part copied
    as is; the labels before `cutoff` dropped when `prune_labels`. The bytes
    `frame_bytes` would write for the same state."""
    n, count = len(held.ts), len(times) // 8
    labels, kept = held.labels, len(held.label_ts)
    if prune_labels:
        assert cutoff is not None
        keep = held.label_ts >= cutoff
        kept = int(keep.sum())
        labels = b"".join(
            (
                _col_bytes(held.label_ids.take(keep)),
                held.label_ts[keep].tobytes(),
                held.label_values[keep].tobytes(),
            )
        )
    at = _HEAD.size  # the event columns' offsets in `blob`
    ts_at, anonymous_at, column_at = at, at + 8 * n, at + 9 * n
    width = 1 + 9 * n  # one numeric column: tag, validity bytes, 8-byte values
    parts = [
        _HEAD.pack(FORMAT, n - start + count, kept, len(columns) - 1),
        blob[ts_at + 8 * start : ts_at + 8 * n],
        times,
        blob[anonymous_at + start : anonymous_at + n],
        bytes(count),  # no anonymous event
    ]
    for c, (tag, valid, data) in enumerate(columns):
        at = column_at + c * width
        parts += [
            tag,
            blob[at + 1 + start : at + 1 + n],
            valid,
            blob[at + 1 + n + 8 * start : at + 1 + 9 * n],
            data,
        ]
    parts.append(labels)
    return b"".join(parts)


def _fresh(held: Col, events: Sequence[Event]) -> list[Event]:
    """The events whose id is not held yet (first of equal ids), by id text."""
    if not events:
        return []
    if held.tag == b"q" and all(type(e.id) is int for e in events):
        ids = [e.id for e in events]
        held_ids = set(held.data.tolist())  # ~1 us per 10 ids: cheaper than isin
        known = [i for i in ids if i in held_ids]
        if not known and len(set(ids)) == len(ids):
            return list(events)
        seen: set[str] = {str(i) for i in known}
    else:
        seen = {str(i) for i in held.python()}
    out = []
    for e in events:
        key = str(e.id)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _append(held: Frame, new: Frame) -> Frame:
    if not len(held.ts):
        return new
    return replace(
        held,
        ts=np.concatenate([held.ts, new.ts]),
        anonymous=np.concatenate([held.anonymous, new.anonymous]),
        ids=concat(held.ids, new.ids, numeric=False),
        values=[concat(a, b) for a, b in zip(held.values, new.values, strict=True)],
    )


def _sorted(f: Frame) -> Frame:
    """Events in key order: (timestamp, anonymous last, id)."""
    n = len(f.ts)
    ts, anon = f.ts, f.anonymous
    if (
        n < 2  # noqa: PLR2004  (nothing to order)
        or (
            f.ids.tag == b"q"
            and bool(
                np.all((ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & _tie_ordered(f)))
            )
        )
    ):
        return f
    if f.ids.tag == b"q":
        order = np.lexsort((f.ids.data, anon, ts))
    else:
        keys = list(zip(ts.tolist(), anon.tolist(), f.ids.python(), strict=True))
        order = np.array(sorted(range(n), key=keys.__getitem__), dtype=np.int64)
    return f.take(order)


def _tie_ordered(f: Frame) -> np.ndarray:
    """Per adjacent pair of equal timestamps: already in (anonymous, id) order."""
    a0, a1 = f.anonymous[:-1], f.anonymous[1:]
    i0, i1 = f.ids.data[:-1], f.ids.data[1:]
    ordered: np.ndarray = (a0 < a1) | ((a0 == a1) & (i0 < i1))
    return ordered


@dataclass
class _NewEvents:
    """The new events of many entities, flat (entity after entity, each one's in
    the order given), as the bytes an append copies: one pass for the batch."""

    starts: list[int]  # entity k's events are [starts[k], starts[k + 1])
    ts: np.ndarray
    ids: np.ndarray
    ts_bytes: bytes
    ids_bytes: bytes
    tags: list[bytes]  # per value column: q (ints and NULLs) or d
    valid: list[bytes]
    data: dict[tuple[int, bytes], bytes]  # (column, held tag) -> the values' bytes
    ordered: np.ndarray  # per entity: keys increasing and ids distinct


def _new_events(events: Sequence[Sequence[Event]]) -> _NewEvents | None:
    """`_NewEvents` of a batch, or None where some event is not a plain append
    (an anonymous event, an id or value other than an int64 or a float)."""
    flat = [e for group in events for e in group]
    if not flat or any(e.anonymous for e in flat):
        return None
    if not all(type(e.id) is int for e in flat):
        return None
    try:
        ids = np.fromiter((e.id for e in flat), np.int64, len(flat))
    except OverflowError:
        return None
    ts = np.fromiter((e.ts_us for e in flat), np.int64, len(flat))
    width = len(flat[0].values)
    if any(len(e.values) != width for e in flat):
        return None
    cols = [col_of([e.values[j] for e in flat]) for j in range(width)]
    if any(c.tag == b"j" for c in cols):
        return None
    data: dict[tuple[int, bytes], bytes] = {}
    for j, c in enumerate(cols):
        data[j, b"d"] = c.data.astype(np.float64).tobytes()
        if c.tag == b"q":
            data[j, b"q"] = c.data.tobytes()
    sizes = [len(group) for group in events]
    starts = [0, *itertools.accumulate(sizes)]
    seg = np.repeat(np.arange(len(events)), sizes)
    ordered = np.ones(len(events), dtype=bool)
    same = seg[1:] == seg[:-1]
    up = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (ids[1:] > ids[:-1]))
    ordered[seg[1:][same & ~up]] = False
    by_id = np.lexsort((ids, seg))
    twin = (seg[by_id][1:] == seg[by_id][:-1]) & (ids[by_id][1:] == ids[by_id][:-1])
    ordered[seg[by_id][1:][twin]] = False
    return _NewEvents(
        starts,
        ts,
        ids,
        ts.tobytes(),
        ids.tobytes(),
        [c.tag for c in cols],
        [c.valid.tobytes() for c in cols],
        data,
        ordered,
    )


def add_events_many(
    blobs: Sequence[bytes | str | None],
    events: Sequence[Sequence[Event]],
    cutoffs: Sequence[int | None],
    *,
    wheres: Sequence[str],
    parsed: Mapping[bytes | str, Frame] | None = None,
) -> list[bytes | str | None]:
    """`add_events` of many entities at once: the same blobs, with the common
    write (new integer-id events after an entity's held ones, none past its
    retention) checked and packed for the whole batch in a few array passes
    and each entity's blob joined from byte slices. An entity whose write is
    not that one takes `add_events`."""
    parsed = parsed or {}

    def one(k: int, held: Frame | None = None) -> bytes | str | None:
        blob = blobs[k]
        if held is None and blob is not None:
            held = parsed.get(blob)
        return add_events(blob, events[k], cutoffs[k], where=wheres[k], parsed=held)

    if len(blobs) < _MANY:  # the batch's array passes cost more than they save
        return [one(k) for k in range(len(blobs))]
    out: list[bytes | str | None] = [None] * len(blobs)
    new = _new_events(events)
    fast: list[int] = []
    frames: list[Frame] = []
    for k, blob in enumerate(blobs):
        if new is not None and events[k] and new.ordered[k] and isinstance(blob, bytes):
            f = parsed.get(blob) or frame(blob, where=wheres[k])
            if len(f.ts) and f.ids.tag == b"q" and len(f.values) == len(new.tags):
                fast.append(k)
                frames.append(f)
                continue
        out[k] = one(k)
    if not fast:
        return out
    assert new is not None
    held_ids = np.concatenate([f.ids.data for f in frames])
    held_ts = np.concatenate([f.ts for f in frames])
    held_n = [len(f.ts) for f in frames]
    bounds = np.cumsum([0, *held_n[:-1]])
    ends = bounds + np.asarray(held_n) - 1
    cut = np.array(
        [_NO_CUT if cutoffs[k] is None else cutoffs[k] for k in fast], dtype=np.int64
    )
    firsts = np.asarray([new.starts[k] for k in fast])
    stats = _Stats(
        np.maximum.reduceat(held_ids, bounds).tolist(),
        held_ts[ends].tolist(),
        held_ids[ends].tolist(),
        np.add.reduceat(held_ts < np.repeat(cut, held_n), bounds).tolist(),
        new.ts[firsts].tolist(),
        new.ids[firsts].tolist(),
        _segment_min(new.ids, [new.starts[k] for k in fast], new.starts),
        _label_min(frames),
    )
    for i, k in enumerate(fast):
        blob = blobs[k]
        assert isinstance(blob, bytes)
        f = frames[i]
        appended = _append_one(blob, f, new, k, cutoffs[k], stats, i)
        out[k] = appended if appended is not None else one(k, f)
    return out


_NO_CUT = -(2**63)
_MANY = 6  # entities from which add_events_many packs the batch at once
# (per entity: 22 us at 2, 14 at 4, 10 at 8, 8.5 at 16, against 13 us each)


@dataclass
class _Stats:
    """Per entity of `add_events_many`'s common path, found for all at once."""

    high: list[int]  # largest held id
    last_ts: list[int]  # the last held event's key
    last_id: list[int]
    start: list[int]  # held events before the cutoff (pruned)
    first_ts: list[int]  # the first new event's key
    first_id: list[int]
    low: list[int]  # smallest new id
    label_min: list[int | None]  # earliest held label time


def _segment_min(values: np.ndarray, firsts: list[int], starts: list[int]) -> list[int]:
    """The smallest of `values` in each segment starting at `firsts` (segments
    of `starts`, none of them empty)."""
    nonempty = [a for a, b in itertools.pairwise(starts) if b > a]
    minima = dict(
        zip(nonempty, np.minimum.reduceat(values, nonempty).tolist(), strict=True)
    )
    return [minima[a] for a in firsts]


def _label_min(frames: Sequence[Frame]) -> list[int | None]:
    """Each frame's earliest label time (None: no label)."""
    sizes = [len(f.label_ts) for f in frames]
    having = [f.label_ts for f in frames if len(f.label_ts)]
    if not having:
        return [None] * len(frames)
    at = np.cumsum([0, *[len(t) for t in having[:-1]]])
    minima = iter(np.minimum.reduceat(np.concatenate(having), at).tolist())
    return [next(minima) if size else None for size in sizes]


def _append_one(  # noqa: PLR0917  (one entity of add_events_many)
    blob: bytes,
    held: Frame,
    new: _NewEvents,
    k: int,
    cutoff: int | None,
    stats: _Stats,
    i: int,
) -> bytes | None:
    """Entity `k`'s appended blob (as `_appended`), or None where its write is
    not the common one (`stats`: entity `i`'s of the batch)."""
    a, b = new.starts[k], new.starts[k + 1]
    n, count = len(held.ts), b - a
    first_ts, last_ts = stats.first_ts[i], stats.last_ts[i]
    if first_ts < last_ts or (
        first_ts == last_ts and stats.first_id[i] <= stats.last_id[i]
    ):
        return None  # not after the held events
    if cutoff is not None and first_ts < cutoff:
        return None  # a new event already past the retention
    anonymous_at = _HEAD.size + 8 * n
    if blob.find(1, anonymous_at, anonymous_at + n) >= 0:
        return None  # an anonymous event held
    tags = [c.tag for c in held.values]
    if any(t == b"q" and new.tags[j] != b"q" for j, t in enumerate(tags)) or (
        b"j" in tags
    ):
        return None  # a column the new values do not fit unchanged
    if stats.low[i] <= stats.high[i] and bool(
        np.isin(new.ids[a:b], held.ids.data).any()
    ):
        return None  # a retry: the general path keeps the first
    earliest = stats.label_min[i]
    columns = [
        (b"q", b"\x01" * count, new.ids_bytes[8 * a : 8 * b]),
        *(
            (tag, new.valid[j][a:b], new.data[j, tag][8 * a : 8 * b])
            for j, tag in enumerate(tags)
        ),
    ]
    return _spliced(
        blob,
        held,
        stats.start[i],
        cutoff,
        new.ts_bytes[8 * a : 8 * b],
        columns,
        prune_labels=cutoff is not None and earliest is not None and earliest < cutoff,
    )
