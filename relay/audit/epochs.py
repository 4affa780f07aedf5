"""Epochs: the log cut into closed stretches, each sealed by an RFC 9162 Merkle root.

An epoch is the run of positions ``first``..``last``; its leaves are the
canonical bytes of each stored event in position order (``chain.link``:
position, aggregate id, version, topic, stored bytes), hashed as RFC 9162
leaves. When it closes, the writer records ``EpochSealed{epoch, first, last,
size, root, previous_root, at}`` on the ``LogEpochs`` aggregate
(relay/domain/seal.py). That event is an ordinary event of the log, so it is
the first event of the *next* epoch, and every node of a PostgreSQL log sees
the same boundary. Why roots instead of the rolling hash: a root can be
recomputed from what is kept after thinning (``merkle.partial_cover``), and
a closed epoch can be checked on its own (ADR 0020).

An epoch closes after a commit, on the writer thread, when it holds
``max_events`` events (it closes at exactly the ``max_events``-th event) or
its first event is ``max_seconds`` old, whichever comes first. The sealer
hashes committed events as they come, a bounded stretch per commit, so
closing a million-event epoch never stalls a write for a million-event read.

The checkpoint a third party holds (``relay audit checkpoint``, ADR 0021) is
a second RFC 9162 tree whose leaves are the sealed epochs (``epoch_leaf``):
its size is the number of sealed epochs and its consistency proofs need
nothing but the EpochSealed events, which are never thinned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from attrs import frozen
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from relay import chain, merkle
from relay.clock import Clock
from relay.domain.seal import EPOCHS_ID, LogEpochs

log = logging.getLogger(__name__)

READ_CHUNK = 5_000
ADVANCE_EVERY = 1_000  # hash committed events in steps of at least this many (or when closing)
MAX_STEP = 20_000  # at most this many events hashed after one commit (a catch-up spreads out)
EPOCH_LEAF_PREFIX = b"relay-epoch-v1\x00"


@frozen
class EpochInfo:
    """One ``EpochSealed`` fact, as read back from the log."""

    epoch: int
    first: int
    last: int
    size: int
    root: str
    previous_root: str | None
    at: int
    position: int = 0  # where the EpochSealed event itself sits (0: not known to the reader)

    @classmethod
    def from_state(cls, state: dict[str, Any], position: int = 0) -> EpochInfo:
        """From an EpochSealed event's stored JSON; raises ValueError when malformed."""
        try:
            info = cls(
                epoch=int(state["epoch"]),
                first=int(state["first"]),
                last=int(state["last"]),
                size=int(state["size"]),
                root=str(state["root"]),
                previous_root=None if state.get("previous_root") is None else str(state["previous_root"]),
                at=int(state["at"]),
                position=position,
            )
            bytes.fromhex(info.root)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed EpochSealed ({type(e).__name__}: {e})") from None
        if len(info.root) != 64:
            raise ValueError("malformed EpochSealed (the root is not 32 bytes)")
        return info


def leaf_of(notification: Any) -> bytes:
    """The RFC 9162 leaf hash of one stored event (library Notification or the like)."""
    return merkle.leaf_hash(
        chain.link(
            notification.id,
            notification.originator_id,
            notification.originator_version,
            notification.topic,
            notification.state,
        )
    )


def epoch_leaf(e: EpochInfo) -> bytes:
    """The bytes an epoch contributes to the checkpoint tree: its number, range, size and root."""
    return b"".join(
        (
            EPOCH_LEAF_PREFIX,
            e.epoch.to_bytes(8, "big"),
            e.first.to_bytes(8, "big"),
            e.last.to_bytes(8, "big"),
            e.size.to_bytes(8, "big"),
            bytes.fromhex(e.root),
        )
    )


def tree_leaves(epochs: Sequence[EpochInfo]) -> list[bytes]:
    """The checkpoint tree's leaf hashes: one per sealed epoch, in order."""
    return [merkle.leaf_hash(epoch_leaf(e)) for e in epochs]


def tree_head(epochs: Sequence[EpochInfo]) -> tuple[int, bytes]:
    """(size, root) of the checkpoint tree over ``epochs``."""
    return len(epochs), merkle.root(tree_leaves(epochs))


# -- reading the epochs back ------------------------------------------------------------


def _states(source: Any) -> Iterator[tuple[int, str, bytes]]:
    """(position or 0, topic, stored bytes) of every LogEpochs event, oldest first."""
    if hasattr(source, "of_aggregate"):  # a LogReader (relay.audit.log, relay.store.reader)
        after = 0
        while True:
            notes, nxt = source.of_aggregate(EPOCHS_ID, after, 1000)
            if not notes:
                return
            for n in notes:
                yield n.id, n.topic, bytes(n.state)
            if nxt <= after:
                return
            after = nxt
    elif hasattr(source, "select_events"):  # a library recorder
        for s in source.select_events(EPOCHS_ID):
            yield 0, s.topic, bytes(s.state)
    else:
        raise TypeError(f"cannot read epochs from {type(source).__name__}")


def sealed_epochs(source: Any) -> list[EpochInfo]:
    """Every sealed epoch in order, from a recorder or a log reader.

    Raises ValueError when an EpochSealed event cannot be read: callers that
    must name the problem (verify) read the events themselves.
    """
    out: list[EpochInfo] = []
    for position, topic, state in _states(source):
        if topic == "EpochSealed":
            out.append(EpochInfo.from_state(orjson.loads(state), position))
    return out


# -- the writer's side ----------------------------------------------------------------------


class EpochSealer:
    """Hashes committed events into the open epoch and seals it when it is full or old.

    Lives on the writer thread (relay/writer.py), beside the rolling-hash
    ``Sealer``; same contract: decide after a commit, before the batch is
    answered, and a failed seal never fails the batch (the writer logs it and
    tries again after the next commit).
    """

    def __init__(self, max_events: int, max_seconds: float, clock: Clock) -> None:
        if max_events < 1 or max_seconds <= 0:
            raise ValueError("an epoch needs a positive size and age")
        self.max_events = max_events
        self.max_ms = int(max_seconds * 1000)
        self.clock = clock
        self.epoch = 0
        self.last = 0  # the last position of the last sealed epoch
        self.root: str | None = None
        self.head = 0
        self.aggregate: LogEpochs | None = None
        self.sealed = 0  # epochs this process sealed
        self._reset()

    def _reset(self) -> None:
        self.builder = merkle.TreeBuilder()
        self.cursor = self.last  # events up to here are in the builder
        self.started_at: int | None = None  # `at` of the open epoch's first event

    @classmethod
    def load(cls, app: Any, max_events: int, max_seconds: float, clock: Clock) -> EpochSealer:
        """The sealer as the store left it: the last sealed epoch, the open one not yet hashed."""
        s = cls(max_events, max_seconds, clock)
        s._reload(app)
        return s

    def _reload(self, app: Any) -> None:
        self.aggregate = None
        self.epoch, self.last, self.root = 0, 0, None
        for stored in app.recorder.select_events(EPOCHS_ID, desc=True, limit=5):
            if stored.topic == "EpochSealed":
                info = EpochInfo.from_state(orjson.loads(stored.state))
                self.epoch, self.last, self.root = info.epoch, info.last, info.root
                break
        else:
            # The newest seal sits in the open epoch, so it is live; but if the
            # archiver ever moved it, the aggregate's snapshot still knows it.
            try:
                agg = app.repository.get(EPOCHS_ID)
            except AggregateNotFoundError:  # no epoch sealed yet
                pass
            else:
                self.epoch, self.last, self.root = agg.epoch, agg.last, agg.root
        self.head = max(self.head, app.recorder.max_notification_id() or 0)
        self._reset()

    def committed(self, recordings: list[Any]) -> None:
        """Note what the writer just committed (called on the writer thread)."""
        if recordings:
            self.head = max(self.head, recordings[-1].notification.id)

    def _advance(self, app: Any, everything: bool) -> None:
        """Hash committed events into the open epoch, up to its size limit."""
        budget = MAX_STEP
        while self.builder.size < self.max_events and budget > 0:
            want = min(READ_CHUNK, self.max_events - self.builder.size, budget)
            notes = app.recorder.select_notifications(start=self.cursor, limit=want, inclusive_of_start=False)
            if not notes:
                return
            if self.started_at is None:
                self.started_at = _at_of(app, notes[0], self.clock)
            for n in notes:
                self.builder.append(leaf_of(n))
            self.cursor = notes[-1].id
            budget -= len(notes)
            if len(notes) < want and not everything:
                return

    def seal(self, app: Any, save: Callable[[list[Any]], list[Any]] | None = None) -> list[Any]:
        """Seal the open epoch if it is full or old; returns the seal's recordings (or none)."""
        now = self.clock.now_ms()
        old = self.started_at is not None and now - self.started_at >= self.max_ms
        full = self.head - self.last >= self.max_events  # gap-free logs: exact; others: a hint
        if self.head - self.cursor >= ADVANCE_EVERY or full or old or self.started_at is None:
            self._advance(app, everything=full or old)
        old = self.started_at is not None and now - self.started_at >= self.max_ms
        if not self.builder.size or not (self.builder.size >= self.max_events or old):
            return []
        if self.cursor < self.head and self.builder.size < self.max_events:
            return []  # old, but not yet caught up with what is committed: next time
        agg = self.aggregate
        if agg is None:
            try:
                agg = app.repository.get(EPOCHS_ID)
            except AggregateNotFoundError:
                agg = LogEpochs(at=now)
        if agg.epoch != self.epoch:
            # Another relay node sealed since we last looked: take its seals as ours.
            self._reload(app)
            return []
        root = self.builder.root().hex()
        agg.seal_epoch(
            epoch=self.epoch + 1,
            first=self.last + 1,
            last=self.cursor,
            size=self.builder.size,
            root=root,
            previous_root=self.root,
            at=now,
        )
        try:
            recordings = save([agg]) if save is not None else app.save(agg)
        except IntegrityError:
            # Another relay node sealed this epoch first: take its seal as ours.
            self._reload(app)
            return []
        except Exception:
            self.aggregate = None  # its pending seal never reached the store
            raise
        self.aggregate = agg
        first = self.last + 1
        self.epoch, self.last, self.root = self.epoch + 1, self.cursor, root
        self.sealed += 1
        log.info(
            "sealed epoch %d: positions %d-%d, %d events, root %s",
            self.epoch,
            first,
            self.last,
            self.builder.size,
            root,
        )
        self._reset()
        self.committed(list(recordings))
        return list(recordings)


def _at_of(app: Any, notification: Any, clock: Clock) -> int:
    """When an epoch's first event happened: its ``at`` (the relay's clock), else now."""
    try:
        event = app.mapper.to_domain_event(notification)
        at = event.__dict__.get("at")
        if isinstance(at, int):
            return at
    except Exception:  # an undecodable event still starts the epoch
        log.debug("epoch start: event %s has no readable `at`", notification.id)
    return clock.now_ms()
