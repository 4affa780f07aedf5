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

import contextlib
import gc
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
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
MAX_BODY = 2**31  # refuse to inflate a (corrupt) part past 2 GiB
BLOCK = 32_768  # events per independently compressed block (a reader inflates one at a time)


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
    """Signed ints: the first as 8 bytes, the rest at the narrowest width that holds them.

    The first value of a delta column is usually absolute (a timestamp, a
    position); keeping it apart lets the rest pack at one or two bytes.
    """
    if not values:
        return b"-"
    rest = _zigzag(values[1:])
    top = max(rest, default=0)
    for code, limit in _WIDTHS:
        if top <= limit:
            return code.encode() + struct.pack(">q", values[0]) + array(code, rest).tobytes()
    raise SegmentError("an integer does not fit in 64 bits")


def _unpack_ints(blob: bytes) -> list[int]:
    if blob == b"-":
        return []
    if len(blob) < 9:
        raise SegmentError("an integer column is torn")
    code = chr(blob[0])
    if code not in "BHIQ":
        raise SegmentError(f"unknown integer width {code!r}")
    arr = array(code)
    if (len(blob) - 9) % arr.itemsize:
        raise SegmentError("an integer column is torn")
    arr.frombytes(blob[9:])
    (head,) = struct.unpack_from(">q", blob, 1)
    return [head, *_unzigzag(arr)]


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


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _is_int(value: Any) -> bool:
    return type(value) is int and -(2**62) < value < 2**62


# -- one block's columns ----------------------------------------------------------------


def _encode_block(events: Sequence[Any], oid_index: dict[UUID, int], before: int) -> bytes:
    """Column parts for ``events`` (Notifications or the like, in position order)."""
    positions = [e.id for e in events]
    oids: list[int] = []
    topic_index: dict[str, int] = {}
    topics: list[int] = []
    last_version: dict[int, int] = {}
    steps: list[int] = []
    bases: list[int] = []  # each aggregate's first version in this block, in order of appearance
    templates: dict[tuple[str, tuple[str, ...]], int] = {}
    template_of: list[int] = []  # 0: raw state; k: templates' (k-1)th
    int_cols: dict[tuple[int, int], list[int]] = {}
    other = bytearray()
    other_lens: list[int] = []
    raw = bytearray()
    raw_lens: list[int] = []
    routing = bytearray()  # one byte per templated value: 1 int column, 0 JSON side stream
    loads, dumps = orjson.loads, orjson.dumps
    for e in events:
        k = oid_index[_uuid(e.originator_id)]
        oids.append(k)
        t = topic_index.get(e.topic)
        if t is None:
            t = topic_index[e.topic] = len(topic_index)
        topics.append(t)
        prev = last_version.get(k)
        if prev is None:
            bases.append(e.originator_version)
            steps.append(0)
        else:
            steps.append(e.originator_version - prev - 1)
        last_version[k] = e.originator_version
        state = bytes(e.state)
        tid = 0
        try:
            obj = loads(state)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and dumps(obj) == state:
            tkey = (e.topic, tuple(obj))
            tid = templates.get(tkey, 0)
            if not tid:
                tid = templates[tkey] = len(templates) + 1
            for j, value in enumerate(obj.values()):
                if _is_int(value):
                    col = int_cols.get((tid, j))
                    if col is None:
                        col = int_cols[(tid, j)] = []
                    col.append(value)
                    routing.append(1)
                else:
                    enc = dumps(value)
                    other += enc
                    other_lens.append(len(enc))
                    routing.append(0)
        else:
            raw += state
            raw_lens.append(len(state))
        template_of.append(tid)
    template_list: list[Any] = [None] * len(templates)
    for (topic, keys), tid in templates.items():
        template_list[tid - 1] = [topic, list(keys)]
    int_keys = sorted(int_cols)
    return _frame(
        [
            _pack_ints(_deltas(positions, before)),
            _pack_ints(_deltas(oids)),
            dumps(list(topic_index)),
            _pack_ints(topics),
            _pack_ints(steps),
            _pack_ints(bases),
            dumps(template_list),
            _pack_ints(template_of),
            dumps([list(k) for k in int_keys]),
            _frame([_pack_ints(_deltas(int_cols[k])) for k in int_keys]),
            _pack_ints(other_lens),
            bytes(other),
            _pack_ints(raw_lens),
            bytes(raw),
            bytes(routing),
        ]
    )


def _decode_block(data: bytes, oid_dict: Sequence[UUID], before: int) -> list[Notification]:
    return [
        Notification(id=p, originator_id=o, originator_version=v, topic=t, state=s)
        for p, o, v, t, s in _decode_rows(data, oid_dict, before)
    ]


def _decode_rows(data: bytes, oid_dict: Sequence[Any], before: int) -> list[tuple[int, Any, int, str, bytes]]:
    """A block's events as (position, oid_dict entry, version, topic, state) tuples."""
    parts = _unframe(data)
    if len(parts) != 15:
        raise SegmentError(f"a block with {len(parts)} columns")
    (
        p_pos,
        p_oid_idx,
        p_topics,
        p_topic_idx,
        p_steps,
        p_bases,
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
    positions = _undeltas(_unpack_ints(p_pos), before)
    n = len(positions)
    oid_idx = _undeltas(_unpack_ints(p_oid_idx))
    topic_dict = orjson.loads(p_topics)
    topic_idx = _unpack_ints(p_topic_idx)
    steps = _unpack_ints(p_steps)
    bases = iter(_unpack_ints(p_bases))
    templates = [(t[0], t[1]) for t in orjson.loads(p_templates)]
    # Each templated value's `"key":` prefix, made once per block: a state is spliced
    # back from these and the values' stored bytes (see below).
    prefixes = [[orjson.dumps(k) + b":" for k in keys] for _, keys in templates]
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
    out: list[tuple[int, Any, int, str, bytes]] = []
    last_version: dict[int, int] = {}
    other_off = raw_off = other_i = raw_i = route_i = 0
    try:
        for i in range(n):
            k = oid_idx[i]
            prev = last_version.get(k)
            version = next(bases) if prev is None else prev + 1 + steps[i]
            last_version[k] = version
            tid = template_of[i]
            if tid:
                # The encoder templated only states equal to orjson.dumps of their
                # dict, and stored each non-int value as orjson.dumps(value): the
                # same bytes spliced in order are that state, without parsing and
                # re-serialising each value (most of an archived read's time).
                # Bytes that are not what was sealed change the leaf: verify names them.
                parts: list[bytes] = []
                for j, prefix in enumerate(prefixes[tid - 1]):
                    if p_routing[route_i]:
                        parts.append(prefix + b"%d" % next(int_cols[(tid, j)]))
                    else:
                        size = other_lens[other_i]
                        parts.append(prefix + p_other[other_off : other_off + size])
                        other_off += size
                        other_i += 1
                    route_i += 1
                state = b"{" + b",".join(parts) + b"}"
            else:
                size = raw_lens[raw_i]
                state = bytes(p_raw[raw_off : raw_off + size])
                raw_off += size
                raw_i += 1
            out.append((positions[i], oid_dict[k], version, topic_dict[topic_idx[i]], state))
    except (IndexError, KeyError, StopIteration, orjson.JSONDecodeError) as e:
        raise SegmentError(f"the columns do not decode ({type(e).__name__})") from None
    return out


# -- whole segments ------------------------------------------------------------------------


@frozen
class Block:
    """Where one block sits in a segment, and what it covers."""

    first: int  # position of its first event
    last: int  # position of its last event
    count: int
    offset: int  # from the start of the segment's bytes
    length: int
    oids: frozenset[int]  # indexes into the segment's aggregate id dictionary


def encode(
    *,
    epoch: int,
    first: int,
    last: int,
    size: int,
    root: str,
    events: Iterable[Any],
    at: int = 0,
    kind: str = "full",
    leaf_index: Sequence[int] | None = None,
    intervals: Sequence[Interval] = (),
    cover: Sequence[tuple[int, int, bytes]] = (),
    block: int = BLOCK,
) -> bytes:
    """The bytes of one segment: clear header, compressed table, compressed blocks."""
    if kind not in ("full", "thin"):
        raise ValueError(f"unknown segment kind {kind!r}")
    oid_index: dict[UUID, int] = {}
    cctx = zstandard.ZstdCompressor(level=LEVEL)
    blobs: list[bytes] = []
    table: list[list[Any]] = []
    before = first - 1
    count = 0
    it = iter(events)
    while True:
        chunk = list(islice(it, block))
        if not chunk:
            break
        for e in chunk:
            oid = _uuid(e.originator_id)
            if oid not in oid_index:
                oid_index[oid] = len(oid_index)
        blob = cctx.compress(_encode_block(chunk, oid_index, before))
        ks = sorted({oid_index[_uuid(e.originator_id)] for e in chunk})
        table.append([chunk[0].id, chunk[-1].id, len(chunk), len(blob), ks])
        blobs.append(blob)
        before = chunk[-1].id
        count += len(chunk)
    if kind == "full" and count != size:
        raise ValueError(f"a full segment holds every leaf: {count} events, size {size}")
    idx = list(leaf_index if leaf_index is not None else range(count))
    if len(idx) != count:
        raise ValueError("one leaf index per kept event")
    meta = cctx.compress(
        _frame(
            [
                b"".join(o.bytes for o in oid_index),
                orjson.dumps(table),
                _pack_ints(_deltas(idx, -1)),
                orjson.dumps([i.to_json() for i in intervals]),
                _pack_ints([c[0] for c in cover]),
                _pack_ints([c[1] for c in cover]),
                b"".join(c[2] for c in cover),
            ]
        )
    )
    header = orjson.dumps(
        {
            "format": FORMAT,
            "epoch": epoch,
            "first": first,
            "last": last,
            "size": size,
            "root": root,
            "at": at,
            "kind": kind,
            "events": count,
            "codec": "zstd",
            "meta": len(meta),
        }
    )
    return b"".join([MAGIC, struct.pack(">I", len(header)), header, meta, *blobs])


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
    for key in ("epoch", "first", "last", "size", "at", "events", "meta"):
        if type(header.get(key)) is not int:
            raise SegmentError(f"the segment header lacks {key}")
    if header.get("kind") not in ("full", "thin") or not isinstance(header.get("root"), str):
        raise SegmentError("the segment header lacks its kind or root")
    header["_meta"] = len(MAGIC) + 4 + hlen
    return header


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Decoding makes a container per event that lives on: the cyclic GC would scan
    them again and again (measured: a block decoded 3x slower). They hold no cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _inflate(blob: bytes) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=MAX_BODY)
    except zstandard.ZstdError as e:
        raise SegmentError(f"a compressed part does not decompress: {e}") from None


class SegmentReader:
    """One segment's bytes, read a block at a time (a reader pages; it never inflates it all)."""

    def __init__(self, data: bytes) -> None:
        header = read_header(data)
        self.data = data
        self.epoch: int = header["epoch"]
        self.first: int = header["first"]
        self.last: int = header["last"]
        self.size: int = header["size"]
        self.root: str = header["root"]
        self.at: int = header["at"]
        self.kind: str = header["kind"]
        self.count: int = header["events"]
        start = header["_meta"]
        end = start + header["meta"]
        if end > len(data):
            raise SegmentError("the segment's table is torn")
        parts = _unframe(_inflate(data[start:end]))
        if len(parts) != 7:
            raise SegmentError(f"a segment table with {len(parts)} parts")
        p_oids, p_table, p_idx, p_intervals, p_starts, p_ends, p_hashes = parts
        if len(p_oids) % 16:
            raise SegmentError("the aggregate id dictionary is torn")
        self.oids = [UUID(bytes=p_oids[i : i + 16]) for i in range(0, len(p_oids), 16)]
        self.oid_index = {o: i for i, o in enumerate(self.oids)}
        self.blocks: list[Block] = []
        offset = end
        try:
            for b_first, b_last, b_count, b_len, ks in orjson.loads(p_table):
                self.blocks.append(Block(b_first, b_last, b_count, offset, b_len, frozenset(ks)))
                offset += b_len
        except (ValueError, TypeError):
            raise SegmentError("the block table does not decode") from None
        if offset != len(data):
            raise SegmentError(
                f"the segment is {len(data)} bytes but its blocks end at {offset} (torn or padded)"
            )
        if sum(b.count for b in self.blocks) != self.count:
            raise SegmentError("the header and the block table disagree on the number of events")
        self.leaf_index = _undeltas(_unpack_ints(p_idx), -1)
        if len(self.leaf_index) != self.count:
            raise SegmentError("the kept events' leaf indexes are torn")
        try:
            self.intervals = [Interval.from_json(r) for r in orjson.loads(p_intervals)]
        except (orjson.JSONDecodeError, TypeError) as e:
            raise SegmentError(f"the intervals do not decode ({e})") from None
        starts, ends = _unpack_ints(p_starts), _unpack_ints(p_ends)
        if not (len(starts) == len(ends) and len(p_hashes) == 32 * len(starts)):
            raise SegmentError("the subtree hashes are torn")
        self.cover = [
            (s, e, p_hashes[32 * i : 32 * i + 32])
            for i, (s, e) in enumerate(zip(starts, ends, strict=True))
        ]
        if self.kind == "full" and self.count != self.size:
            raise SegmentError("a full segment that does not hold every leaf")

    def block(self, i: int) -> list[Notification]:
        """The events of block ``i``."""
        b = self.blocks[i]
        before = self.first - 1 if i == 0 else self.blocks[i - 1].last
        with _no_gc():
            events = _decode_block(
                _inflate(self.data[b.offset : b.offset + b.length]), self.oids, before
            )
        if len(events) != b.count or (events and (events[0].id != b.first or events[-1].id != b.last)):
            raise SegmentError(f"block {i} does not hold what the table says")
        return events

    def rows(self, i: int, oids: Sequence[Any]) -> list[tuple[int, Any, int, str, bytes]]:
        """Block ``i`` as plain tuples, with ``oids[k]`` for the aggregate id (verify's hot loop:
        no Notification per event). The same checks as ``block``."""
        b = self.blocks[i]
        before = self.first - 1 if i == 0 else self.blocks[i - 1].last
        with _no_gc():
            rows = _decode_rows(_inflate(self.data[b.offset : b.offset + b.length]), oids, before)
        if len(rows) != b.count or (rows and (rows[0][0] != b.first or rows[-1][0] != b.last)):
            raise SegmentError(f"block {i} does not hold what the table says")
        return rows

    def events(self) -> list[Notification]:
        """Every event the segment holds (all of a full epoch; the kept ones of a thin one)."""
        out: list[Notification] = []
        for i in range(len(self.blocks)):
            out.extend(self.block(i))
        return out


def decode(data: bytes) -> Segment:
    """A whole segment; raises SegmentError when any part is torn or inconsistent."""
    r = SegmentReader(data)
    events = r.events()
    if events and not (r.first <= events[0].id and events[-1].id <= r.last):
        raise SegmentError("an event lies outside the segment's range")
    return Segment(
        epoch=r.epoch,
        first=r.first,
        last=r.last,
        size=r.size,
        root=r.root,
        kind=r.kind,
        events=events,
        leaf_index=r.leaf_index,
        intervals=r.intervals,
        cover=r.cover,
    )
