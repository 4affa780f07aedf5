"""``relay audit verify``: check a log from position 0 and name the first problem.

One pass over the log, in bounded reads, checks:

- positions strictly increase (and, on SQLite, have no holes: rowids are
  never skipped there, so a hole is a deleted event);
- each aggregate's versions run 1, 2, 3, ... in log order (a deleted, moved
  or duplicated event of an aggregate breaks the run);
- every event decodes and folds into the read models;
- the rolling hash (relay.audit.chain) matches every seal, event by event;
- the read models rebuilt from position 0 equal the relay's checkpoint at the
  checkpoint's position, and the log is not shorter than that checkpoint.

What passing does and does not prove is in docs/audit.md.
"""

from __future__ import annotations

import bisect
import hmac
from array import array
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from attrs import frozen

from relay.audit import chain
from relay.audit.log import LogReader, iterate
from relay.domain.seal import SEAL_ID
from relay.projections.follower import CHECKPOINT_FILE
from relay.projections.readmodels import ReadModels

MAX_PROBLEMS = 50


@frozen
class Problem:
    """One thing wrong with the log, at the first position where it shows."""

    position: int
    message: str


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


def verify(
    log: LogReader,
    data_dir: Path | None,
    gapless: bool,
    expect: tuple[int, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Check the whole log (up to its head when the check started)."""
    problems: list[Problem] = []

    def problem(position: int, message: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(position, message))

    # The checkpoint first, then the head: a running relay only ever checkpoints
    # what its store already holds, so in this order the head is never behind it.
    checkpoint = _load_checkpoint(data_dir, problem)
    head = log.head()
    cp_position = checkpoint[0].position if checkpoint else None
    if checkpoint is not None and cp_position is not None and cp_position > head:
        problem(
            head + 1,
            f"the log ends at position {head}, but the relay's checkpoint is at {cp_position}: "
            "events were removed from the end of the log (or the checkpoint is from another log)",
        )

    rm: ReadModels | None = ReadModels()
    versions: dict[Any, int] = {}
    h = chain.GENESIS
    segment = _Segment()
    sealed_upto = 0
    seals = 0
    last_seal = 0
    last_hash = ""
    previous = 0
    events = 0
    for n in iterate(log, 0, head):
        pos = n.id
        events += 1
        if pos <= previous:
            problem(pos, f"position {pos} comes after {previous}: positions must increase")
        elif gapless and pos != previous + 1:
            missing = f"{previous + 1}" if pos == previous + 2 else f"{previous + 1}-{pos - 1}"
            problem(previous + 1, f"position {missing} is missing from the log (deleted?)")
        previous = max(previous, pos)

        expected_version = versions.get(n.originator_id, 0) + 1
        if n.originator_version != expected_version:
            problem(
                pos,
                f"aggregate {n.originator_id} jumps to version {n.originator_version} where "
                f"{expected_version} was expected (an event of it was deleted, moved or copied)",
            )
        versions[n.originator_id] = max(versions.get(n.originator_id, 0), n.originator_version)

        h = chain.step(h, n)
        segment.add(n, h)
        if expect is not None and pos == expect[0] and h.hex() != expect[1]:
            problem(pos, f"the chain at position {pos} is {h.hex()}, not the expected {expect[1]}")

        try:
            event = log.decode(n)
        except Exception as e:
            problem(pos, f"the event cannot be decoded ({type(e).__name__}: {e})")
            if rm is not None:
                rm = None
            continue

        if n.topic == "LogSealed" and n.originator_id == SEAL_ID:
            seals += 1
            last_seal = pos
            sealed_upto, bad, recorded = _check_seal(event, pos, segment, sealed_upto)
            for p in bad:
                problem(*p)
            if bad and recorded is not None:
                h = segment.restart_from(recorded) or h
            last_hash = getattr(event, "hash", "")

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
        if checkpoint is not None and rm is not None and pos == cp_position:
            _compare_checkpoint(rm, checkpoint[0], checkpoint[1], n, problem)
        if progress is not None and events % 10_000 == 0:
            progress(pos, head)
    if progress is not None:
        progress(head, head)
    if rm is not None and cp_position is not None and rm.position < cp_position <= head:
        problem(cp_position, f"the checkpoint's position {cp_position} is not in the log")
    problems.sort(key=lambda p: p.position)
    return Report(
        events=events,
        head=head,
        seals=seals,
        last_seal=last_seal,
        last_sealed=sealed_upto,
        last_hash=last_hash,
        checkpoint=cp_position,
        problems=problems,
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
        bad.append((positions[0], f"the seal at position {position} starts at {first}, "
                    f"but the log's events after the previous seal start at {positions[0]}"))
    if not bad and (not values or not hmac.compare_digest(values[-1], recorded)):
        bad.append((upto, f"the chain up to position {upto} does not match the seal at {position}"))
    return upto, bad, recorded


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
