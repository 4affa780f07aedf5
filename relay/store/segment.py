"""The archive segment codec: one closed epoch's events in a few compressed columns.

A stored event costs ~177 bytes in the live SQLite store (row, primary key,
32-hex-character id twice). Almost all of that is redundancy across events:
positions count up by one, a few hundred aggregate ids repeat, a dozen topics
repeat, versions go up by one per aggregate, and a heartbeat's state is the
same JSON shape with two growing integers. So a segment stores the epoch by
column (ADR 0023):

- positions: deltas from the previous position;
- aggregate ids: a dictionary (16 bytes each, once) and an index per event;
- topics: a dictionary and an index per event;
- versions: the step from the same aggregate's previous version, minus one
  (zero for nearly every event);
- states: each JSON object state that orjson re-encodes byte for byte is
  split into a *template* (its topic and keys, a dictionary) and its values:
  integer values go to one column per (template, key), as deltas from the
  previous value in that column; other values are JSON in a side stream.
  Anything else (not an object, or not reproduced exactly) is kept raw.

Each integer column is packed at the narrowest fixed width (1, 2, 4 or 8
bytes) that holds its zigzagged values, and the whole body is compressed
with zstandard. Decoding reproduces every event's bytes exactly; the archiver
proves it by recomputing the epoch's Merkle root from the decoded events
before a single live row is deleted.

A *thinned* segment (relay.store.thinning) is the same columns for the kept
events plus their leaf indexes in the epoch, the heartbeats' presence
intervals, and the subtree hashes that stand in for the dropped leaves.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any
from uuid import UUID

import orjson
import zstandard
from attrs import frozen
from eventsourcing.persistence import Notification

MAGIC = b"RLYSEG1\n"
FORMAT = 1
LEVEL = 19  # zstandard level: segments are written once and read often (ADR 0023)
MAX_HEADER = 64 * 1024
MAX_BODY = 2**31  # refuse to inflate a (corrupt) segment past 2 GiB


class SegmentError(ValueError):
    """Raised when segment bytes are torn, corrupt or of an unknown format."""


@frozen
class Interval:
    """One entity's run of heartbeats, as kept after thinning."""

    originator_id: str  # hex aggregate id
    topic: str
    first_position: int
    last_position: int
    first_version: int
    last_version: int
    count: int
    first_at: int  # ms
    last_at: int  # ms
    longest_gap_ms: int

    def to_json(self) -> list[Any]:
        return [
            self.originator_id,
            self.topic,
            self.first_position,
            self.last_position,
            self.first_version,
            self.last_version,
            self.count,
            self.first_at,
            self.last_at,
            self.longest_gap_ms,
        ]

    @classmethod
    def from_json(cls, row: Sequence[Any]) -> Interval:
        return cls(*row)


@frozen
class Segment:
    """A decoded segment: the header and the events it holds (all, or the kept ones)."""

    epoch: int
    first: int
    last: int
    size: int  # leaves of the epoch (every event sealed, kept or not)
    root: str  # hex Merkle root of the epoch
    kind: str  # "full" or "thin"
    events: list[Notification]
    leaf_index: list[int]  # each event's index among the epoch's leaves
    intervals: list[Interval]
    cover: list[tuple[int, int, bytes]]  # (start, end exclusive, subtree hash) for dropped leaves


# -- integer columns ------------------------------------------------------------------

_WIDTHS = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFFFFFF), ("Q", 0xFFFFFFFFFFFFFFFF))


def _zigzag(values: Iterable[int]) -> list[int]:
    return [(v << 1) ^ (v >> 63) if v < 0 else v << 1 for v in values]


def _unzigzag(values: Iterable[int]) -> list[int]:
    return [(v >> 1) ^ -(v & 1) for v in values]


def _pack_ints(values: Sequence[int]) -> bytes:
    """Signed ints at the narrowest width that holds them all (1 byte of width tag)."""
    zz = _zigzag(values)
    top = max(zz, default=0)
    for code, limit in _WIDTHS:
        if top <= limit:
            arr = array(code, zz)
            if arr.itemsize != struct.calcsize(code):  # pragma: no cover - exotic platforms
                break
            return code.encode() + arr.tobytes()
    raise SegmentError("an integer does not fit in 64 bits")


def _unpack_ints(blob: bytes) -> list[int]:
    if not blob:
        raise SegmentError("an integer column is missing its width tag")
    code = chr(blob[0])
    if code not in "BHIQ":
        raise SegmentError(f"unknown integer width {code!r}")
    arr = array(code)
    if (len(blob) - 1) % arr.itemsize:
        raise SegmentError("an integer column is torn")
    arr.frombytes(blob[1:])
    return _unzigzag(arr)


def _deltas(values: Sequence[int], start: int = 0) -> list[int]:
    out = []
    prev = start
    for v in values:
        out.append(v - prev)
        prev = v
    return out


def _undeltas(deltas: Sequence[int], start: int = 0) -> list[int]:
    return list(accumulate(deltas, initial=start))[1:]


# -- framing: length-prefixed parts -------------------------------------------------------


def _frame(parts: Sequence[bytes]) -> bytes:
    out = [struct.pack(">I", len(parts))]
    for p in parts:
        out.append(struct.pack(">I", len(p)))
        out.append(p)
    return b"".join(out)


def _unframe(data: bytes) -> list[bytes]:
    try:
        (n,) = struct.unpack_from(">I", data, 0)
        off = 4
        parts = []
        for _ in range(n):
            (size,) = struct.unpack_from(">I", data, off)
            off += 4
            if off + size > len(data):
                raise SegmentError("a column is torn")
            parts.append(data[off : off + size])
            off += size
    except struct.error:
        raise SegmentError("the column table is torn") from None
    if off != len(data):
        raise SegmentError("trailing bytes after the last column")
    return parts


# -- the events' columns ----------------------------------------------------------------


def _encode_events(events: Sequence[Any], first: int) -> list[bytes]:
    """Column parts for ``events`` (library Notifications or the like, in position order)."""
    positions = [e.id for e in events]
    oid_index: dict[UUID, int] = {}
    oids: list[int] = []
    topic_index: dict[str, int] = {}
    topics: list[int] = []
    last_version: dict[UUID, int] = {}
    version_steps: list[int] = []
    templates: dict[tuple[str, tuple[str, ...]], int] = {}
    template_of: list[int] = []  # 0: raw state; k: templates' (k-1)th
    int_cols: dict[tuple[int, int], list[int]] = {}
    int_last: dict[tuple[int, int], int] = {}
    other = bytearray()
    other_lens: list[int] = []
    raw = bytearray()
    raw_lens: list[int] = []
    routing = bytearray()  # one byte per templated value: 1 int column, 0 JSON side stream
    loads, dumps = orjson.loads, orjson.dumps
    for e in events:
        oid = e.originator_id if isinstance(e.originator_id, UUID) else UUID(str(e.originator_id))
        k = oid_index.get(oid)
        if k is None:
            k = oid_index[oid] = len(oid_index)
        oids.append(k)
        t = topic_index.get(e.topic)
        if t is None:
            t = topic_index[e.topic] = len(topic_index)
        topics.append(t)
        version_steps.append(e.originator_version - last_version.get(oid, 0) - 1)
        last_version[oid] = e.originator_version
        state = bytes(e.state)
        tid = 0
        try:
            obj = loads(state)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and dumps(obj) == state:
            keys = tuple(obj)
            tkey = (e.topic, keys)
            tid = templates.get(tkey, 0)
            if not tid:
                tid = templates[tkey] = len(templates) + 1
            for j, (key, value) in enumerate(obj.items()):
                if type(value) is int and -(2**62) < value < 2**62:
                    ck = (tid, j)
                    col = int_cols.get(ck)
                    if col is None:
                        col = int_cols[ck] = []
                    col.append(value - int_last.get(ck, 0))
                    int_last[ck] = value
                    routing.append(1)
                else:
                    routing.append(0)
                    enc = dumps(value)
                    other += enc
                    other_lens.append(len(enc))
        else:
            raw += state
            raw_lens.append(len(state))
        template_of.append(tid)
    template_list = [None] * len(templates)
    for (topic, keys), tid in templates.items():
        template_list[tid - 1] = [topic, list(keys)]  # type: ignore[call-overload]
    # Which template keys hold ints, per template: the decoder needs it to route values.
    int_keys = sorted(int_cols)
    return [
        _pack_ints(_deltas(positions, first - 1)),
        b"".join(o.bytes for o in oid_index),
        _pack_ints(_deltas(oids)),
        dumps(list(topic_index)),
        _pack_ints(topics),
        _pack_ints(version_steps),
        dumps(template_list),
        _pack_ints(template_of),
        dumps([list(k) for k in int_keys]),
        _frame([_pack_ints(int_cols[k]) for k in int_keys]),
        _pack_ints(other_lens),
        bytes(other),
        _pack_ints(raw_lens),
        bytes(raw),
        bytes(routing),
    ]


def _decode_events(parts: Sequence[bytes], first: int) -> list[Notification]:
    (
        p_pos,
        p_oids,
        p_oid_idx,
        p_topics,
        p_topic_idx,
        p_versions,
        p_templates,
        p_template_of,
        p_int_keys,
        p_int_cols,
        p_other_lens,
        p_other,
        p_raw_lens,
        p_raw,
        p_routing,
    ) = parts
    positions = _undeltas(_unpack_ints(p_pos), first - 1)
    n = len(positions)
    if len(p_oids) % 16:
        raise SegmentError("the aggregate id dictionary is torn")
    oid_dict = [UUID(bytes=p_oids[i : i + 16]) for i in range(0, len(p_oids), 16)]
    oid_idx = _undeltas(_unpack_ints(p_oid_idx))
    topic_dict = orjson.loads(p_topics)
    topic_idx = _unpack_ints(p_topic_idx)
    steps = _unpack_ints(p_versions)
    template_list = orjson.loads(p_templates)
    template_of = _unpack_ints(p_template_of)
    int_keys = [tuple(k) for k in orjson.loads(p_int_keys)]
    int_cols = {
        k: iter(_undeltas(_unpack_ints(blob)))
        for k, blob in zip(int_keys, _unframe(p_int_cols), strict=True)
    }
    other_lens = _unpack_ints(p_other_lens)
    raw_lens = _unpack_ints(p_raw_lens)
    if not (len(oid_idx) == len(topic_idx) == len(steps) == len(template_of) == n):
        raise SegmentError("columns disagree on the number of events")
    out: list[Notification] = []
    last_version: dict[int, int] = {}
    other_off = raw_off = 0
    other_i = raw_i = route_i = 0
    dumps, loads = orjson.dumps, orjson.loads
    templates = [(t[0], t[1]) for t in template_list]
    try:
        for i in range(n):
            k = oid_idx[i]
            version = last_version.get(k, 0) + 1 + steps[i]
            last_version[k] = version
            tid = template_of[i]
            topic = topic_dict[topic_idx[i]]
            if tid:
                _, keys = templates[tid - 1]
                obj: dict[str, Any] = {}
                for j, key in enumerate(keys):
                    if p_routing[route_i]:
                        obj[key] = next(int_cols[(tid, j)])
                    else:
                        size = other_lens[other_i]
                        obj[key] = loads(p_other[other_off : other_off + size])
                        other_off += size
                        other_i += 1
                    route_i += 1
                state = dumps(obj)
            else:
                size = raw_lens[raw_i]
                state = bytes(p_raw[raw_off : raw_off + size])
                raw_off += size
                raw_i += 1
            out.append(
                Notification(
                    id=positions[i],
                    originator_id=oid_dict[k],
                    originator_version=version,
                    topic=topic,
                    state=state,
                )
            )
    except (IndexError, KeyError, StopIteration, orjson.JSONDecodeError) as e:
        raise SegmentError(f"the columns do not decode ({type(e).__name__})") from None
    return out


# -- whole segments ------------------------------------------------------------------------


def encode(
    *,
    epoch: int,
    first: int,
    last: int,
    size: int,
    root: str,
    events: Sequence[Any],
    kind: str = "full",
    leaf_index: Sequence[int] | None = None,
    intervals: Sequence[Interval] = (),
    cover: Sequence[tuple[int, int, bytes]] = (),
) -> bytes:
    """The bytes of one segment (header in clear, columns compressed)."""
    if kind not in ("full", "thin"):
        raise ValueError(f"unknown segment kind {kind!r}")
    if kind == "full" and len(events) != size:
        raise ValueError(f"a full segment holds every leaf: {len(events)} events, size {size}")
    header = orjson.dumps(
        {
            "format": FORMAT,
            "epoch": epoch,
            "first": first,
            "last": last,
            "size": size,
            "root": root,
            "kind": kind,
            "events": len(events),
            "codec": "zstd",
        }
    )
    parts = _encode_events(events, first)
    if kind == "thin":
        idx = list(leaf_index if leaf_index is not None else range(len(events)))
        parts += [
            _pack_ints(_deltas(idx, -1)),
            orjson.dumps([i.to_json() for i in intervals]),
            _pack_ints([c[0] for c in cover]),
            _pack_ints([c[1] for c in cover]),
            b"".join(c[2] for c in cover),
        ]
    body = zstandard.ZstdCompressor(level=LEVEL).compress(_frame(parts))
    return MAGIC + struct.pack(">I", len(header)) + header + body


def read_header(data: bytes) -> dict[str, Any]:
    """The segment's header (epoch, first, last, size, root, kind, events), without its body."""
    if not data.startswith(MAGIC):
        raise SegmentError("not a relay archive segment (bad magic)")
    try:
        (hlen,) = struct.unpack_from(">I", data, len(MAGIC))
    except struct.error:
        raise SegmentError("the segment header is torn") from None
    if hlen > MAX_HEADER or len(MAGIC) + 4 + hlen > len(data):
        raise SegmentError("the segment header is torn")
    try:
        header = orjson.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + hlen])
    except orjson.JSONDecodeError:
        raise SegmentError("the segment header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SegmentError(f"unknown segment format {header!r:.80}")
    for key in ("epoch", "first", "last", "size", "events"):
        if type(header.get(key)) is not int:
            raise SegmentError(f"the segment header lacks {key}")
    if header.get("kind") not in ("full", "thin") or not isinstance(header.get("root"), str):
        raise SegmentError("the segment header lacks its kind or root")
    header["_body"] = len(MAGIC) + 4 + hlen
    return header


def decode(data: bytes) -> Segment:
    """A whole segment; raises SegmentError when any part is torn or inconsistent."""
    header = read_header(data)
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            data[header["_body"] :], max_output_size=MAX_BODY
        )
    except zstandard.ZstdError as e:
        raise SegmentError(f"the segment body does not decompress: {e}") from None
    parts = _unframe(raw)
    kind = header["kind"]
    if len(parts) != (15 if kind == "full" else 20):
        raise SegmentError(f"a {kind} segment with {len(parts)} columns")
    events = _decode_events(parts[:15], header["first"])
    if len(events) != header["events"]:
        raise SegmentError("the header and the columns disagree on the number of events")
    intervals: list[Interval] = []
    cover: list[tuple[int, int, bytes]] = []
    if kind == "thin":
        leaf_index = _undeltas(_unpack_ints(parts[15]), -1)
        if len(leaf_index) != len(events):
            raise SegmentError("the kept events' leaf indexes are torn")
        try:
            intervals = [Interval.from_json(r) for r in orjson.loads(parts[16])]
        except (orjson.JSONDecodeError, TypeError) as e:
            raise SegmentError(f"the intervals do not decode ({e})") from None
        starts, ends, hashes = _unpack_ints(parts[17]), _unpack_ints(parts[18]), parts[19]
        if not (len(starts) == len(ends) and len(hashes) == 32 * len(starts)):
            raise SegmentError("the subtree hashes are torn")
        cover = [(s, e, hashes[32 * i : 32 * i + 32]) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]
    else:
        leaf_index = list(range(len(events)))
    if any(not header["first"] <= e.id <= header["last"] for e in events[:1] + events[-1:]):
        raise SegmentError("an event lies outside the segment's range")
    return Segment(
        epoch=header["epoch"],
        first=header["first"],
        last=header["last"],
        size=header["size"],
        root=header["root"],
        kind=kind,
        events=events,
        leaf_index=leaf_index,
        intervals=intervals,
        cover=cover,
    )
