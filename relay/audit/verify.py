"""``relay audit verify``: check a log from position 0 and name the first problem.

One pass over the log, in bounded reads, checks:

- positions strictly increase (and, on SQLite, have no holes: rowids are
  never skipped there, so a hole is a deleted event);
- each aggregate's versions run 1, 2, 3, ... in log order (a deleted, moved
  or duplicated event of an aggregate breaks the run);
- every event decodes and folds into the read models;
- the rolling hash (relay.chain) matches every seal, event by event;
- the read models rebuilt from position 0 equal the relay's checkpoint at the
  checkpoint's position, and the log is not shorter than that checkpoint.

What passing does and does not prove is in docs/audit.md.
"""

from __future__ import annotations

import base64
import bisect
import hmac
import itertools
import struct
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from attrs import Factory, frozen
from eventsourcing.persistence import Notification

from relay import chain, merkle
from relay.audit.epochs import EpochInfo, tree_head, tree_leaves
from relay.audit.log import READ_CHUNK, LogReader
from relay.domain.seal import EPOCHS_ID, SEAL_ID
from relay.projections.follower import CHECKPOINT_FILE
from relay.projections.readmodels import ReadModels

MAX_PROBLEMS = 50


@frozen
class Problem:
    """One thing wrong with the log, at the first position where it shows."""

    position: int
    message: str
    epoch: int | None = None  # the sealed epoch the position is in (None: open, or none)


@frozen
class Report:
    """What ``verify`` found."""

    events: int
    head: int
    seals: int
    last_seal: int  # position of the last seal event (0: none)
    last_sealed: int  # the last position covered by a seal
    last_hash: str
    checkpoint: int | None  # position of the checkpoint compared (None: none found)
    problems: list[Problem]
    epochs: EpochsSummary | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class _Segment:
    """Chain values since the last checked seal, for the next one.

    Compact (40 bytes an event: position and chain value), because a log that
    was never sealed is one long segment; the events themselves are kept only
    for a short trailing window, which is all a restart after a mismatch needs.
    """

    TRAIL = 256

    def __init__(self) -> None:
        self.positions: array[int] = array("q")
        self.values = bytearray()
        self.trail: deque[Any] = deque(maxlen=self.TRAIL)

    def add(self, note: Any, value: bytes) -> None:
        self.positions.append(note.id)
        self.values += value
        self.trail.append(note)

    def value(self, i: int) -> bytes:
        return bytes(self.values[32 * i : 32 * i + 32])

    def take_upto(self, upto: int) -> tuple[list[int], list[bytes]]:
        n = bisect.bisect_right(self.positions, upto)
        ps = list(self.positions[:n])
        vs = [self.value(i) for i in range(n)]
        del self.positions[:n]
        del self.values[: 32 * n]
        return ps, vs

    def restart_from(self, value: bytes) -> bytes | None:
        """Recompute what is left from ``value`` (a seal's own hash); returns the new chain end.

        After a mismatch the recomputed chain differs from the sealed one forever;
        continuing from what the seal recorded checks each later segment on its
        own, so one bad event is reported once, not at every later seal. None
        when the events left are no longer at hand (then later seals may repeat
        the report).
        """
        left = len(self.positions)
        notes = [n for n in self.trail if n.id >= self.positions[0]] if left else []
        if len(notes) != left:
            return None
        h = value
        for i, note in enumerate(notes):
            h = chain.step(h, note)
            self.values[32 * i : 32 * i + 32] = h
        return h


@frozen
class VerifyState:
    """What an earlier passing ``verify`` proved, so the next one checks only what is new.

    ``epochs``: the (number, root) of every epoch it recomputed and found
    sealed correctly. ``seed``: the last seal (upto, chain hash) at or before
    the end of the last of those epochs, where the rolling chain picks up
    (that seal itself, already checked, is not checked again).
    """

    epochs: list[tuple[int, str]]
    seed: tuple[int, str, int] | None = None  # (upto, chain hash, the seal's own position)
    # The proven epochs' seals in full, so the next run need not read every
    # archived segment just to list the epochs again (it reads only newer seals).
    infos: list[EpochInfo] = Factory(list)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": 1,
                "epochs": [list(e) for e in self.epochs],
                "seed": list(self.seed) if self.seed else None,
                "seals": [
                    [e.epoch, e.first, e.last, e.size, e.root, e.previous_root, e.at, e.position]
                    for e in self.infos
                ],
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> VerifyState:
        """Raises ValueError when the file is not a state this code wrote."""
        try:
            d = orjson.loads(raw)
            if d.get("format") != 1:
                raise ValueError(f"unknown format {d.get('format')!r}")
            epochs = [(int(k), str(r)) for k, r in d["epochs"]]
            if [k for k, _ in epochs] != list(range(1, len(epochs) + 1)):
                raise ValueError("the verified epochs are not 1, 2, 3, ...")
            seed = d.get("seed")
            infos = [
                EpochInfo.from_state(dict(zip(_INFO_KEYS, row, strict=True)), int(row[7]))
                for row in d.get("seals") or []
            ]
            if [(e.epoch, e.root) for e in infos] != epochs[: len(infos)] or (
                infos and len(infos) != len(epochs)
            ):
                raise ValueError("the remembered seals do not match the verified epochs")
            return cls(epochs, (int(seed[0]), str(seed[1]), int(seed[2])) if seed else None, infos)
        except (AttributeError, KeyError, TypeError, IndexError, orjson.JSONDecodeError) as e:
            raise ValueError(f"malformed verify state ({type(e).__name__}: {e})") from None


_INFO_KEYS = ("epoch", "first", "last", "size", "root", "previous_root", "at", "position")


@frozen
class TreeHead:
    """A checkpoint someone kept: the epoch tree's size and root (relay.audit.checkpoint)."""

    origin: str
    size: int
    root: bytes


@frozen
class EpochsSummary:
    """What ``verify`` found about the epochs and the checkpoint."""

    sealed: int  # epochs sealed in the log
    checked: int  # recomputed from their events in this run
    trusted: int  # skipped: verified by an earlier run (same root)
    thinned: int  # checked from their kept events and subtree hashes
    open_from: int  # the first position of the open epoch
    tree_size: int
    tree_root: bytes
    checkpoint: TreeHead | None  # the checkpoint proven extended (None: none given)
    state: VerifyState | None  # what to remember (None: something failed)
    read_models: bool  # the rebuilt read models were compared with the relay's checkpoint


def verify(
    log: LogReader,
    data_dir: Path | None,
    gapless: bool,
    expect: tuple[int, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    state: VerifyState | None = None,
    checkpoint: TreeHead | None = None,
) -> Report:
    """Check the log up to its head when the check started.

    Without ``state`` (a full check) every event from position 0 is read and
    the read models are rebuilt. With ``state`` (from an earlier passing run),
    epochs it verified are trusted if their recorded roots are unchanged, and
    only later events are read: the new epochs and the open one.
    """
    problems: list[Problem] = []

    def problem(position: int, message: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(position, message))

    # The checkpoint first, then the head: a running relay only ever checkpoints
    # what its store already holds, so in this order the head is never behind it.
    rm_checkpoint = _load_checkpoint(data_dir, problem)
    head = log.head()
    known = state.infos if state is not None and expect is None and state.infos else None
    epochs = _read_epochs(log, head, problem, known)
    if known:
        _recheck_live_seals(log, known, problem)
    cp_position = rm_checkpoint[0].position if rm_checkpoint else None
    if rm_checkpoint is not None and cp_position is not None and cp_position > head:
        problem(
            head + 1,
            f"the log ends at position {head}, but the relay's checkpoint is at {cp_position}: "
            "events were removed from the end of the log (or the checkpoint is from another log)",
        )

    # -- which epochs are already proven ------------------------------------------------
    trusted = 0
    if state is not None and expect is None:
        for k, root in state.epochs:
            if k > len(epochs):
                problem(head + 1, f"epoch {k}, verified earlier, is no longer sealed in the log")
                break
            if epochs[k - 1].root != root:
                e = epochs[k - 1]
                problem(
                    e.position or e.first,
                    f"epoch {k}'s sealed root is {e.root}, but verify proved it was {root}: "
                    "the log was rewritten since (or the state file belongs to another log: "
                    "--full ignores it)",
                )
                break
            trusted = k
    start_after = epochs[trusted - 1].last if trusted else 0
    full = trusted == 0  # nothing to skip: read everything and rebuild the read models too
    thin = _thin_epochs(log, epochs)
    fast_checked = fast_thinned = fast_events = 0
    if not full and not problems and trusted < len(epochs):
        # The new closed epochs: their roots alone, read fast. Any mismatch and the
        # whole log is checked the slow way instead, which names the position.
        found = _fast_epochs(log, epochs, trusted, thin, gapless)
        if found is None:
            return verify(log, data_dir, gapless, expect, progress, None, checkpoint)
        fast_events, fast_thinned, seal_seen = found
        fast_checked = len(epochs) - trusted - fast_thinned
        if state is not None:
            state = VerifyState(state.epochs, seal_seen or state.seed)
        trusted = len(epochs)
        start_after = epochs[-1].last

    rm: ReadModels | None = ReadModels() if full and not thin else None
    versions: dict[Any, tuple[int, int]] = {}  # aggregate -> (version, position)
    h = chain.GENESIS
    segment = _Segment()
    sealed_upto = 0
    chain_valid = True
    after = start_after
    seed_seal = 0  # the position of the seal an earlier run checked, where the chain picks up
    if trusted:
        seed = state.seed if state is not None else None
        if seed is not None and seed[0] <= start_after:
            after, sealed_upto, h, seed_seal = seed[0], seed[0], bytes.fromhex(seed[1]), seed[2]
        else:
            chain_valid = False  # picks up at the next seal (whose bytes an epoch root proved)
    seals = 0
    last_seal = 0
    last_hash = ""
    seed_out = state.seed if state is not None and trusted else None
    previous = after
    events = 0
    checked = thinned = 0
    thin_until = 0
    expect_seen = False
    for e in epochs[:trusted]:
        if e.epoch in thin and e.last > after:
            # The stretch re-read before the first new epoch was thinned since it was
            # proven: its chain and version runs cannot be recomputed; pick up after it.
            thin_until, chain_valid = max(thin_until, e.last), False
    ei = trusted  # the epoch being read (index into epochs)
    builder = merkle.TreeBuilder()

    def finish_epoch(i: int) -> None:
        nonlocal checked
        e = epochs[i]
        checked += 1
        if builder.size == e.size and builder.root().hex() == e.root:
            return
        inside = [p.position for p in problems if e.first <= p.position <= e.last]
        where = min(inside) if inside else e.first
        problem(
            where,
            f"epoch {e.epoch} (positions {e.first}-{e.last}, {e.size} events sealed) now holds "
            f"{builder.size} events whose Merkle root is not the sealed one: an event in it was "
            "edited, deleted, inserted or moved"
            + ("" if inside else " (no seal digest names which: see docs/audit.md)"),
        )

    def enter_thin(i: int) -> None:
        nonlocal thinned, chain_valid, thin_until
        e = epochs[i]
        thinned += 1
        chain_valid = False
        thin_until = max(thin_until, e.last)
        try:
            kept, cover = thin[e.epoch]()
            got = merkle.root_from_partial(e.size, kept, cover)
        except Exception as x:
            problem(
                e.first,
                f"epoch {e.epoch} is thinned, but its kept events and subtree hashes "
                f"do not make a tree ({type(x).__name__}: {x})",
            )
            return
        if got.hex() != e.root:
            problem(
                e.first,
                f"epoch {e.epoch} (positions {e.first}-{e.last}) is thinned, and its kept events "
                "and subtree hashes do not hash to the sealed root: a kept event or a subtree hash "
                "was edited, deleted or moved",
            )

    if ei < len(epochs) and epochs[ei].epoch in thin:
        enter_thin(ei)
    opened = None
    if not full and expect is None and chain_valid and not problems and not thin_until and ei >= len(
        epochs
    ):
        # Incremental, every closed epoch proven: the open epoch's chain and seals in one
        # tight pass; any doubt and the careful pass below reads it again and names it.
        opened = _fast_open(log, after, head, h, sealed_upto, seed_seal, gapless, epochs)
    if opened is not None:
        events, seals, last_seal, sealed_upto, last_hash, found_seed = opened
        seed_out = found_seed or seed_out
    try:
        skipped: list[int] = []
        notes = iter(()) if opened is not None else _notes(log, after, head, problem, skipped)
        for n in notes:
            pos = n.id
            events += 1
            if skipped and skipped[-1] > thin_until:
                # A stretch was unreadable (reported): like a thinned one, the chain and
                # the version runs pick up after it instead of reporting it again.
                thin_until, chain_valid = skipped[-1], False
            # Close every epoch that ends before this position.
            while ei < len(epochs) and epochs[ei].last < pos:
                if epochs[ei].epoch not in thin and epochs[ei].last > start_after:
                    finish_epoch(ei)
                builder = merkle.TreeBuilder()
                ei += 1
                if ei < len(epochs) and epochs[ei].epoch in thin:
                    enter_thin(ei)
            in_epoch = ei < len(epochs) and epochs[ei].first <= pos
            in_thin = in_epoch and epochs[ei].epoch in thin
            link = chain.link(pos, n.originator_id, n.originator_version, n.topic, n.state)
            if pos > start_after and in_epoch and not in_thin:
                builder.append(sha256(b"\x00" + link).digest())  # merkle.leaf_hash, link made once

            if pos <= previous:
                problem(pos, f"position {pos} comes after {previous}: positions must increase")
            elif gapless and pos != previous + 1 and not in_thin and previous + 1 > thin_until:
                missing = f"{previous + 1}" if pos == previous + 2 else f"{previous + 1}-{pos - 1}"
                problem(previous + 1, f"position {missing} is missing from the log (deleted?)")
            previous = max(previous, pos)

            seen = versions.get(n.originator_id)
            if seen is not None:
                loose = in_thin or seen[1] <= thin_until
                expected_version = seen[0] + 1
                if n.originator_version < expected_version or (
                    not loose and n.originator_version != expected_version
                ):
                    problem(
                        pos,
                        f"aggregate {n.originator_id} jumps to version {n.originator_version} where "
                        f"{expected_version} was expected (an event of it was deleted, moved or copied)",
                    )
            elif full and n.originator_version != 1 and not thin_until and not in_thin:
                problem(
                    pos,
                    f"aggregate {n.originator_id} jumps to version {n.originator_version} where "
                    "1 was expected (an event of it was deleted, moved or copied)",
                )
            versions[n.originator_id] = (max(seen[0] if seen else 0, n.originator_version), pos)

            h = sha256(h + link).digest()  # chain.step
            segment.add(n, h)
            if expect is not None and pos == expect[0]:
                expect_seen = True
                if not chain_valid:
                    problem(
                        pos,
                        f"the chain at position {pos} cannot be recomputed (heartbeats before it "
                        "were thinned): keep a checkpoint instead (relay audit checkpoint)",
                    )
                elif h.hex() != expect[1]:
                    problem(pos, f"the chain at position {pos} is {h.hex()}, not the expected {expect[1]}")

            if not full and n.topic != "LogSealed":
                continue  # incremental: the roots and seals cover its bytes; decoding is for folding
            try:
                event = log.decode(n)
            except Exception as e:
                problem(pos, f"the event cannot be decoded ({type(e).__name__}: {e})")
                rm = None
                continue

            if n.topic == "LogSealed" and n.originator_id == SEAL_ID and pos > seed_seal:
                seals += 1
                last_seal = pos
                if chain_valid:
                    sealed_upto, bad, recorded = _check_seal(event, pos, segment, sealed_upto)
                    for p in bad:
                        problem(*p)
                    if bad and recorded is not None:
                        h = segment.restart_from(recorded) or h
                else:
                    # The chain before this seal is not at hand (thinned, or trusted from an
                    # earlier run): take up the chain from what the seal recorded. Its bytes
                    # are an event of the log, proven by its epoch's root.
                    recorded_seal = _seal_fields(event)
                    if recorded_seal is not None and recorded_seal[1] > sealed_upto:
                        sealed_upto, recorded = recorded_seal[1], recorded_seal[3]
                        segment.take_upto(sealed_upto)
                        restarted = segment.restart_from(recorded)
                        if restarted is not None and sealed_upto >= thin_until:
                            h, chain_valid = restarted, True
                last_hash = getattr(event, "hash", "")
                if epochs and sealed_upto <= epochs[-1].last and chain_valid:
                    seed_out = (sealed_upto, last_hash, pos)

            if rm is not None:
                try:
                    rm.apply(pos, event)
                except Exception as e:
                    problem(
                        pos,
                        f"the event does not fold into the read models ({type(e).__name__}: {e}); "
                        "the read models were not compared past this point",
                    )
                    rm = None
            if rm_checkpoint is not None and rm is not None and pos == cp_position:
                _compare_checkpoint(rm, rm_checkpoint[0], rm_checkpoint[1], n, problem)
            if progress is not None and events % 10_000 == 0:
                progress(pos, head)
    except Exception as e:  # an archive segment that cannot be read, a store that went away
        at = previous + 1
        problem(at, f"the log cannot be read after position {previous} ({type(e).__name__}: {e})")
    while ei < len(epochs):
        if epochs[ei].epoch not in thin and epochs[ei].last > start_after:
            finish_epoch(ei)
        builder = merkle.TreeBuilder()
        ei += 1
        if ei < len(epochs) and epochs[ei].epoch in thin:
            enter_thin(ei)
    if progress is not None:
        progress(head, head)
    if expect is not None and not expect_seen:
        problem(
            expect[0],
            f"position {expect[0]} is not in the log (or was thinned), so --expect cannot be checked",
        )
    if rm is not None and cp_position is not None and rm.position < cp_position <= head:
        problem(cp_position, f"the checkpoint's position {cp_position} is not in the log")

    size, root = tree_head(epochs)
    if checkpoint is not None:
        _check_tree_head(checkpoint, epochs, problem, head)

    problems.sort(key=lambda p: p.position)
    summary = EpochsSummary(
        sealed=len(epochs),
        checked=checked + fast_checked,
        trusted=trusted - fast_checked - fast_thinned,
        thinned=thinned + fast_thinned,
        open_from=epochs[-1].last + 1 if epochs else 1,
        tree_size=size,
        tree_root=root,
        checkpoint=checkpoint,
        state=None if problems else VerifyState([(e.epoch, e.root) for e in epochs], seed_out, list(epochs)),
        read_models=rm is not None and cp_position is not None,
    )
    return Report(
        events=events + fast_events,
        head=head,
        seals=seals,
        last_seal=last_seal,
        last_sealed=sealed_upto,
        last_hash=last_hash,
        checkpoint=cp_position if summary.read_models else None,
        problems=[_named(p, epochs, log) for p in problems],
        epochs=summary,
    )


def _fast_epochs(
    log: LogReader,
    epochs: list[EpochInfo],
    trusted: int,
    thin: dict[int, Callable[[], tuple[dict[int, bytes], list[Any]]]],
    gapless: bool,
) -> tuple[int, int, tuple[int, str, int] | None] | None:
    """Recompute the roots of epochs ``trusted+1..`` in one tight read; None at the first doubt.

    Only what the roots need: each event's leaf, positions increasing (and
    gap-free on SQLite), thinned epochs from their kept leaves and cover. It
    also notes the last rolling seal inside these epochs, where the careful
    pass over the open epoch picks up the chain. Returns (events read, epochs
    proven thinned, that seal) or None when anything does not match.
    """
    events = thinned = 0
    seal: tuple[int, str, int] | None = None
    previous = epochs[trusted - 1].last if trusted else 0
    for e in epochs[trusted:]:
        if e.epoch in thin:
            try:
                kept, cover = thin[e.epoch]()
                if merkle.root_from_partial(e.size, kept, cover).hex() != e.root:
                    return None
            except Exception:
                return None
            thinned += 1
        builder = merkle.TreeBuilder()
        count = 0
        try:
            for rows in plain_rows(log, e.first - 1, e.last):
                positions = [r[0] for r in rows]
                if positions[0] <= previous or any(a >= b for a, b in itertools.pairwise(positions)):
                    return None
                if gapless and e.epoch not in thin and positions[-1] - previous != len(positions):
                    return None  # increasing and spanning exactly their count: no holes
                previous = positions[-1]
                count += len(rows)
                if e.epoch not in thin:
                    builder.extend(_leaf_hashes(rows))
                for r in rows:
                    if r[3] == "LogSealed" and oid_bytes(r[1]) == SEAL_ID.bytes:
                        fields = _seal_fields(log.decode(as_notification(r)))
                        if fields is None:
                            return None
                        seal = (fields[1], fields[3].hex(), r[0])
        except Exception:  # an unreadable stretch: the careful pass names it
            return None
        events += count
        if e.epoch not in thin and (builder.size != e.size or builder.root().hex() != e.root):
            return None
        if e.epoch in thin:
            seal = None  # the chain cannot be taken up inside a thinned epoch
    return events, thinned, seal


Row = tuple[int, Any, int, str, bytes]  # position, aggregate id (UUID or its text), version, topic, bytes

_LINK_HEAD = struct.Struct(">Q16sq").pack  # chain.link's position, aggregate id and version
_OIDS: dict[Any, bytes] = {}
_TOPICS: dict[str, bytes] = {}


def oid_bytes(oid: Any) -> bytes:
    """An aggregate id's 16 bytes, from a UUID or the text the SQLite store keeps (cached)."""
    b = _OIDS.get(oid)
    if b is None:
        if len(_OIDS) >= 100_000:
            _OIDS.clear()
        b = _OIDS[oid] = oid if isinstance(oid, bytes) else _uuid_of(oid).bytes
    return b


def _uuid_of(oid: Any) -> UUID:
    return oid if isinstance(oid, UUID) else UUID(oid)


def _topic_bytes(topic: str) -> bytes:
    b = _TOPICS.get(topic)
    if b is None:
        b = _TOPICS[topic] = topic.encode() + b"\x00"
    return b


def _leaf_hashes(rows: list[Row]) -> list[bytes]:
    """``merkle.leaf_hash(chain.link(...))`` of each row, in one comprehension (the hot loop).

    Byte for byte the same link as relay.chain.link (tests/audit/test_verify.py
    compares them); only the per-event function calls are gone.
    """
    oids, topics, head = _OIDS, _TOPICS, _LINK_HEAD
    return [
        sha256(
            b"\x00"
            + head(p, oids.get(o) or oid_bytes(o), v)
            + (topics.get(t) or _topic_bytes(t))
            + s
        ).digest()
        for p, o, v, t, s in rows
    ]


def as_notification(r: Row) -> Notification:
    oid = UUID(bytes=oid_bytes(r[1]))
    return Notification(id=r[0], originator_id=oid, originator_version=r[2], topic=r[3], state=bytes(r[4]))


def plain_rows(log: LogReader, after: int, stop: int) -> Iterator[list[Row]]:
    """The events in ``(after, stop]`` as plain tuples, in batches; raises when a stretch is unreadable.

    Archived positions come from the archive's blocks; live ones straight from
    the store's rows when the reader offers them (``rows``), without building
    a Notification per event. A live read that raced with an archiving is
    read again from the archive, as relay.store.reader does.
    """
    archive = getattr(log, "archive", None)
    live = getattr(log, "live", log) if archive is not None else log
    raw = getattr(live, "rows", None)
    while after < stop:
        covered = archive.covered_upto() if archive is not None else 0
        if archive is not None and after < covered:
            yield from _archived_rows(archive, after, min(stop, covered))
            after = min(stop, covered)  # all the archive holds there (holes: the caller's check)
            continue
        if raw is None:
            batch = log.select(after, READ_CHUNK, stop)
            if not batch:
                return
            yield [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in batch]
            after = batch[-1].id
            continue
        rows = raw(after, READ_CHUNK, stop)
        if archive is not None and archive.refresh() and archive.covered_upto() > covered:
            continue  # live rows may have left for a segment published since: read again
        if not rows:
            return
        yield rows
        after = rows[-1][0]
        if len(rows) < READ_CHUNK:
            return


def _archived_rows(archive: Any, after: int, stop: int) -> Iterator[list[Row]]:
    """Archived events in ``(after, stop]`` a block at a time, aggregate ids as their 16 bytes."""
    for entry in archive.entries():
        if entry.last <= after or entry.first > stop:
            continue
        seg = archive.segment(entry)
        oids = [u.bytes for u in seg.oids]
        for i, b in enumerate(seg.blocks):
            if b.last <= after or b.first > stop:
                continue
            rows = seg.rows(i, oids)
            if rows[0][0] <= after or rows[-1][0] > stop:
                rows = [r for r in rows if after < r[0] <= stop]
            if rows:
                yield rows
                after = rows[-1][0]


def _fast_open(
    log: LogReader,
    after: int,
    head: int,
    h: bytes,
    sealed_upto: int,
    seed_seal: int,
    gapless: bool,
    epochs: list[EpochInfo],
) -> tuple[int, int, int, int, str, tuple[int, str, int] | None] | None:
    """The careful pass's checks of an incremental run past the proven epochs, fast; None at any doubt.

    Positions increasing (gap-free on SQLite), each aggregate's versions
    running on by one, the rolling chain from ``h`` matching every seal (its
    first, count, every digest and its hash). Returns (events, seals, last
    seal's position, last sealed position, its hash, the seed to remember).
    """
    events = seals = last_seal = 0
    last_hash = ""
    seed: tuple[int, str, int] | None = None
    versions: dict[Any, int] = {}
    previous = after
    chain_positions: list[int] = []
    chain_values: list[bytes] = []
    seal_bytes = SEAL_ID.bytes
    try:
        for rows in plain_rows(log, after, head):
            heads = _link_heads(rows)
            for (pos, oid, version, topic, state), link in zip(rows, heads, strict=True):
                if pos <= previous or (gapless and pos != previous + 1):
                    return None
                previous = pos
                key = _OIDS.get(oid) or oid_bytes(oid)  # one key whether read as text or bytes
                seen = versions.get(key)
                if seen is not None and version != seen + 1:
                    return None
                versions[key] = version
                h = sha256(h + link + state).digest()
                chain_positions.append(pos)
                chain_values.append(h)
                events += 1
                if topic != "LogSealed" or pos <= seed_seal or oid_bytes(oid) != seal_bytes:
                    continue
                event = log.decode(as_notification((pos, oid, version, topic, state)))
                fields = _seal_fields(event)
                if fields is None:
                    return None
                first, upto, count, recorded = fields
                if upto >= pos or upto <= sealed_upto:
                    return None
                n = bisect.bisect_right(chain_positions, upto)
                covered = chain_values[:n]
                digests = chain.unpack_digests(event.digests)
                if (
                    n != count
                    or len(digests) != count
                    or not covered
                    or chain_positions[0] != first
                    or chain_positions[n - 1] != upto
                    or covered[-1] != recorded
                    or any(v[: chain.DIGEST_BYTES] != d for v, d in zip(covered, digests, strict=True))
                ):
                    return None
                del chain_positions[:n], chain_values[:n]
                seals += 1
                last_seal, sealed_upto, last_hash = pos, upto, event.hash
                if epochs and sealed_upto <= epochs[-1].last:
                    seed = (sealed_upto, last_hash, pos)
    except Exception:  # unreadable, undecodable: the careful pass names it
        return None
    return events, seals, last_seal, sealed_upto, last_hash, seed


def _link_heads(rows: list[Row]) -> list[bytes]:
    """``chain.link`` of each row without its state (the caller appends the state)."""
    oids, topics, head = _OIDS, _TOPICS, _LINK_HEAD
    return [
        head(p, oids.get(o) or oid_bytes(o), v) + (topics.get(t) or _topic_bytes(t))
        for p, o, v, t, _ in rows
    ]


def _refuse(position: int, message: str) -> None:
    raise ValueError(message)


def _leaf(n: Any) -> bytes:
    return merkle.leaf_hash(chain.link(n.id, n.originator_id, n.originator_version, n.topic, n.state))


def _named(p: Problem, epochs: list[EpochInfo], log: LogReader) -> Problem:
    """The problem with the epoch its position is in (sealed epochs only).

    When the epoch seals themselves could not all be read, the archive's
    segment headers still say which epoch a position was archived in.
    """
    i = bisect.bisect_left([e.last for e in epochs], p.position)
    if i < len(epochs) and epochs[i].first <= p.position:
        return Problem(p.position, p.message, epochs[i].epoch)
    for entry in _archive_entries(log):
        if entry.first <= p.position <= entry.last:
            return Problem(p.position, p.message, int(entry.epoch))
    return p


def _archive_entries(log: LogReader) -> list[Any]:
    archive = getattr(log, "archive", None)
    if archive is None:
        return []
    try:
        return list(archive.entries())
    except Exception:  # naming is best effort; the problem itself is already recorded
        return []


def _notes(
    log: LogReader,
    after: int,
    head: int,
    problem: Callable[[int, str], None],
    skipped: list[int] | None = None,
) -> Iterator[Any]:
    """Every event after ``after`` up to ``head``; an unreadable segment is reported and skipped.

    The end of each skipped stretch is appended to ``skipped`` before the next event is given.
    """
    while True:
        try:
            batch = log.select(after, READ_CHUNK, head)
        except Exception as e:
            skip = next((x.last for x in _archive_entries(log) if x.first <= after + 1 <= x.last), 0)
            try:  # a later segment may be the broken one: read up to the end of this one only
                batch = log.select(after, READ_CHUNK, min(head, skip)) if skip > after else []
            except Exception:
                batch = []
            if batch:
                yield from batch
                after = batch[-1].id
                continue
            problem(
                after + 1,
                f"the log cannot be read after position {after} ({type(e).__name__}: {e})"
                + (f"; positions up to {skip} were skipped" if skip > after else ""),
            )
            if skip <= after:
                return
            if skipped is not None:
                skipped.append(skip)
            after = skip
            continue
        if not batch:
            return
        yield from batch
        after = batch[-1].id
        if len(batch) < READ_CHUNK:
            return


def _read_epochs(
    log: LogReader, head: int, problem: Callable[[int, str], None], known: list[EpochInfo] | None = None
) -> list[EpochInfo]:
    """The sealed epochs, checked as a chain: numbered 1, 2, ..., contiguous, each naming the last root.

    With ``known`` (epochs an earlier run proved, with their seals' positions)
    only seals after the last known one are read.
    """
    out: list[EpochInfo] = list(known or [])
    after = out[-1].position if out and out[-1].position else 0
    if not after:
        out = []
    while True:
        try:
            notes, nxt = log.of_aggregate(EPOCHS_ID, after, 1000)
        except Exception:
            # An archive segment that does not read: find the seals by reading the log
            # around it (the unreadable stretch itself is reported by the main pass).
            notes = [n for n in _notes(log, after, head, lambda *_: None) if n.originator_id == EPOCHS_ID]
            nxt = notes[-1].id if notes else after
        for n in notes:
            if n.topic != "EpochSealed" or n.id > head:
                continue
            try:
                e = EpochInfo.from_state(orjson.loads(n.state), n.id)
            except ValueError as x:
                problem(
                    n.id,
                    f"the epoch seal at position {n.id} is unreadable ({x}); later epochs are not checked",
                )
                return out
            want = out[-1] if out else None
            if e.epoch != len(out) + 1:
                problem(
                    n.id,
                    f"the epoch seal at position {n.id} is for epoch {e.epoch}, where {len(out) + 1} belongs",
                )
                return out
            if e.first != (want.last if want else 0) + 1 or e.last < e.first or e.last >= n.id:
                problem(
                    n.id,
                    f"epoch {e.epoch} is sealed over positions {e.first}-{e.last}, which do not follow "
                    f"epoch {e.epoch - 1} (up to {want.last if want else 0}) or end before its seal",
                )
                return out
            if e.previous_root != (want.root if want else None):
                problem(
                    n.id,
                    f"epoch {e.epoch} names {e.previous_root} as the previous root, not epoch "
                    f"{e.epoch - 1}'s {want.root if want else None}",
                )
                return out
            out.append(e)
        if not notes or nxt <= after:
            return out
        after = nxt


def _recheck_live_seals(log: LogReader, known: list[EpochInfo], problem: Callable[[int, str], None]) -> None:
    """Remembered seals still in the live store must read as they did when proven.

    Cheap (the live store finds one aggregate's events by index); archived
    seals are re-read only by ``--full``.
    """
    live = getattr(log, "live", log)
    try:
        notes, _ = live.of_aggregate(EPOCHS_ID, 0, 100_000)
    except Exception:  # the main pass reports an unreadable log
        return
    for n in notes:
        if n.topic != "EpochSealed":
            continue
        try:
            e = EpochInfo.from_state(orjson.loads(n.state), n.id)
        except ValueError:
            problem(n.id, f"the epoch seal at position {n.id} is unreadable")
            continue
        if e.epoch <= len(known) and e != known[e.epoch - 1]:
            problem(
                n.id,
                f"epoch {e.epoch}'s sealed root is {e.root}, but verify proved it was "
                f"{known[e.epoch - 1].root} (and its seal at position {known[e.epoch - 1].position}): "
                "the log was rewritten since (or the state file belongs to another log: --full ignores it)",
            )


def _thin_epochs(
    log: LogReader, epochs: list[EpochInfo]
) -> dict[int, Callable[[], tuple[dict[int, bytes], list[Any]]]]:
    """Thinned epochs in the archive (relay.store.reader), each with a loader of its kept leaves and cover.

    A thinned segment keeps some events with their leaf indexes in the epoch
    and the subtree hashes that stand in for the dropped ones; the leaves are
    recomputed here from the kept events' bytes, never taken from the segment.
    """
    archive = getattr(log, "archive", None)
    if archive is None or not epochs:
        return {}
    out: dict[int, Callable[[], tuple[dict[int, bytes], list[Any]]]] = {}
    try:
        archive.refresh()
        entries = list(archive.entries())
    except Exception:
        return {}
    for entry in entries:
        if getattr(entry, "kind", "full") != "thin":
            continue

        def load(entry: Any = entry) -> tuple[dict[int, bytes], list[Any]]:
            seg = archive.segment(entry)
            kept_events = [n for i in range(len(seg.blocks)) for n in seg.block(i)]
            if len(kept_events) != len(seg.leaf_index):
                raise ValueError("the kept events and their leaf indexes disagree in number")
            kept = {}
            for index, n in zip(seg.leaf_index, kept_events, strict=True):
                if index in kept:
                    raise ValueError(f"leaf {index} is kept twice")
                kept[index] = _leaf(n)
            _check_intervals(seg, kept)
            return kept, list(seg.cover)

        out[int(entry.epoch)] = load
    return out


def _check_intervals(seg: Any, kept: dict[int, bytes]) -> None:
    """The presence intervals account for exactly the dropped leaves (ValueError if not).

    Intervals are a summary the archiver made of heartbeats before dropping
    them; the root cannot prove them (they were never sealed), but they must
    at least agree with the tree: as many heartbeats as dropped leaves, each
    run starting and ending on a dropped position of the epoch.
    """
    intervals = list(getattr(seg, "intervals", []))
    dropped = seg.size - len(kept)
    counted = sum(int(iv.count) for iv in intervals)
    if counted != dropped:
        raise ValueError(
            f"the presence intervals count {counted} heartbeats and seals, but {dropped} leaves were dropped"
        )
    gapless = seg.last - seg.first + 1 == seg.size
    for iv in intervals:
        ends = (int(iv.first_position), int(iv.last_position))
        if not seg.first <= ends[0] <= ends[1] <= seg.last:
            raise ValueError(f"a presence interval {ends} lies outside the epoch")
        if gapless and any(p - seg.first in kept for p in ends):
            raise ValueError(f"a presence interval {ends} starts or ends on a kept event")


def _check_tree_head(
    cp: TreeHead, epochs: list[EpochInfo], problem: Callable[[int, str], None], head: int
) -> None:
    """Prove the epoch tree today is an append-only extension of the checkpoint (RFC 9162 §2.1.4)."""
    n = len(epochs)
    if cp.size > n:
        problem(
            head + 1,
            f"the checkpoint covers {cp.size} epochs, but the log has {n} sealed: "
            "epochs were removed (or the checkpoint is from another log)",
        )
        return
    leaves = tree_leaves(epochs)
    proof = merkle.consistency_proof(cp.size, leaves)
    if not merkle.verify_consistency(cp.size, n, cp.root, merkle.root(leaves), proof):
        e = epochs[cp.size - 1] if cp.size else None
        problem(
            e.position if e and e.position else 0,
            f"the log is not an append-only extension of the checkpoint ({cp.size} epochs, root "
            f"{base64.b64encode(cp.root).decode()}): one of epochs 1-{cp.size} was sealed differently "
            "since it was taken",
        )


def _check_seal(
    seal: Any, position: int, segment: _Segment, sealed_upto: int
) -> tuple[int, list[tuple[int, str]], bytes | None]:
    """Compare one seal with the recomputed chain.

    Returns the new sealed position, what is wrong, and the hash the seal
    recorded (None when the seal itself is unreadable).
    """
    bad: list[tuple[int, str]] = []
    try:
        first, upto, count = int(seal.first), int(seal.upto), int(seal.count)
        recorded = bytes.fromhex(seal.hash)
        digests = chain.unpack_digests(seal.digests)
        if len(recorded) != len(chain.GENESIS):
            raise ValueError("the hash is not 32 bytes")
    except (AttributeError, TypeError, ValueError) as e:
        return sealed_upto, [(position, f"the seal at position {position} is malformed ({e})")], None
    if upto >= position or upto <= sealed_upto:
        return (
            sealed_upto,
            [(position, f"the seal at position {position} covers up to {upto}, out of order")],
            None,
        )
    positions, values = segment.take_upto(upto)
    for i, (p, v) in enumerate(zip(positions, values, strict=False)):
        if i >= len(digests):
            break
        if not hmac.compare_digest(v[: chain.DIGEST_BYTES], digests[i]):
            bad.append(
                (
                    p,
                    f"position {p} does not match what the seal at position {position} recorded: "
                    "this event, or one before it since the previous seal, was edited, deleted, "
                    "inserted or moved",
                )
            )
            break
    if not bad and (len(positions) != count or len(digests) != count):
        at = positions[-1] if positions else upto
        bad.append(
            (
                at,
                f"the seal at position {position} covers {count} events from {first} to {upto}, "
                f"but the log now holds {len(positions)} there: events were deleted or inserted",
            )
        )
    if not bad and positions and positions[0] != first:
        bad.append(
            (
                positions[0],
                f"the seal at position {position} starts at {first}, "
                f"but the log's events after the previous seal start at {positions[0]}",
            )
        )
    if not bad and (not values or not hmac.compare_digest(values[-1], recorded)):
        bad.append((upto, f"the chain up to position {upto} does not match the seal at {position}"))
    return upto, bad, recorded


def _seal_fields(seal: Any) -> tuple[int, int, int, bytes] | None:
    """(first, upto, count, hash) of a LogSealed event, or None when malformed."""
    try:
        recorded = bytes.fromhex(seal.hash)
        if len(recorded) != len(chain.GENESIS):
            return None
        return int(seal.first), int(seal.upto), int(seal.count), recorded
    except (AttributeError, TypeError, ValueError):
        return None


def _load_checkpoint(
    data_dir: Path | None, problem: Callable[[int, str], None]
) -> tuple[ReadModels, Any] | None:
    if data_dir is None:
        return None
    path = data_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        state = orjson.loads(path.read_bytes())
        anchor = state.pop("anchor", None)
        return ReadModels.from_state(state), anchor
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem(0, f"the read-model checkpoint {path} is unreadable ({e})")
        return None


def _compare_checkpoint(
    rm: ReadModels,
    saved: ReadModels,
    anchor: Any,
    n: Any,
    problem: Callable[[int, str], None],
) -> None:
    pos = n.id
    if anchor is not None and anchor != [n.originator_id.hex, n.originator_version]:
        problem(pos, f"the checkpoint was taken over a different event at position {pos}")
    mine, theirs = rm.comparable(), saved.comparable()
    if mine != theirs:
        parts = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        problem(
            pos,
            f"the read models rebuilt from position 0 differ from the relay's checkpoint at "
            f"position {pos} (in {', '.join(parts)})",
        )
