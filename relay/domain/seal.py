"""The log seal: periodic checkpoints of the rolling hash, stored in the log itself.

One aggregate for the whole log. Each ``LogSealed`` event says: "the events
from ``first`` to ``upto`` (``count`` of them) chain to ``hash``", plus a short
digest per event (relay/chain.py). Seals are facts about the log, not
about any agent or orchestrator, so the read models ignore them; the relay's
writer records one every ``seal_every`` events, and ``relay audit verify``
recomputes them (docs/audit.md says what that proves).

``LogEpochs`` seals the log a second way, in closed *epochs* each with an
RFC 9162 Merkle root (relay/audit/epochs.py, ADR 0020): roots let events
leave the live store (archived, thinned) and still be proven.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

SEAL_KEY = "relay:log-seal"


class LogSeal(Aggregate):
    """The chain of seals over the log; its versions count the seals (plus one)."""

    TOPIC = "LogSeal"

    class Event(Aggregate.Event):
        TOPIC = "LogSealEvent"

    @staticmethod
    def create_id(**_: Any) -> UUID:
        """One seal aggregate per log, found without a lookup."""
        return uuid5(NAMESPACE_URL, SEAL_KEY)

    class Opened(Aggregate.Created, Event):
        """The chain of seals over the log began."""

        TOPIC = "LogSealOpened"
        class_version = 1
        at: int

    @event(Opened)
    def __init__(self, at: int) -> None:
        self.upto = 0
        self.hash = ""
        self.opened_at = at

    def seal(self, first: int, upto: int, count: int, hash: str, digests: str, at: int) -> None:
        """Record that ``count`` events from ``first`` to ``upto`` chain to ``hash``."""
        if upto <= self.upto:
            raise ValueError(f"seal up to {upto} does not extend the last one ({self.upto})")
        self._sealed(first=first, upto=upto, count=count, hash=hash, digests=digests, at=at)

    class Sealed(Event):
        """Events ``first`` to ``upto`` (``count`` of them) chain to ``hash``; ``digests``: one each."""

        TOPIC = "LogSealed"
        class_version = 1
        first: int
        upto: int
        count: int
        hash: str
        digests: str
        at: int

    @event(Sealed)
    def _sealed(self, first: int, upto: int, count: int, hash: str, digests: str, at: int) -> None:
        self.upto = upto
        self.hash = hash


EPOCHS_KEY = "relay:log-epochs"


class LogEpochs(Aggregate):
    """The chain of closed epochs: each ``EpochSealed`` carries its Merkle root and the previous one.

    A sibling of ``LogSeal`` rather than more events on it: the rolling-hash
    sealer and the epoch sealer both write from the writer thread, and one
    aggregate each keeps their optimistic versions from colliding with each
    other (a collision must only ever mean "another relay node sealed first").
    The rules here are the ones every node must agree on: epochs are numbered
    1, 2, 3, ..., each starts right after the previous one, and each names the
    previous root, so a missing or reordered epoch cannot be recorded.
    """

    TOPIC = "LogEpochs"

    class Event(Aggregate.Event):
        TOPIC = "LogEpochsEvent"

    @staticmethod
    def create_id(**_: Any) -> UUID:
        """One epoch chain per log, found without a lookup."""
        return uuid5(NAMESPACE_URL, EPOCHS_KEY)

    class Opened(Aggregate.Created, Event):
        """The chain of Merkle epochs began."""

        TOPIC = "LogEpochsOpened"
        class_version = 1
        at: int

    @event(Opened)
    def __init__(self, at: int) -> None:
        self.epoch = 0
        self.last = 0
        self.root: str | None = None
        self.opened_at = at

    def seal_epoch(
        self, epoch: int, first: int, last: int, size: int, root: str, previous_root: str | None, at: int
    ) -> None:
        """Record that positions ``first``..``last`` (``size`` events) hash to Merkle ``root``."""
        if epoch != self.epoch + 1:
            raise ValueError(f"epoch {epoch} does not follow epoch {self.epoch}")
        if first != self.last + 1 or last < first or size < 1:
            raise ValueError(f"epoch {epoch} [{first}, {last}] does not start after {self.last}")
        if previous_root != self.root:
            raise ValueError(f"epoch {epoch} names previous root {previous_root}, not {self.root}")
        if len(root) != 64:
            raise ValueError("an epoch root is 32 bytes in hex")
        self._epoch_sealed(
            epoch=epoch, first=first, last=last, size=size, root=root, previous_root=previous_root, at=at
        )

    class EpochSealed(Event):
        """Positions ``first`` to ``last`` (``size`` events) hash to ``root``, after ``previous_root``."""

        TOPIC = "EpochSealed"
        class_version = 1
        epoch: int
        first: int
        last: int
        size: int
        root: str
        previous_root: str | None
        at: int

    @event(EpochSealed)
    def _epoch_sealed(
        self, epoch: int, first: int, last: int, size: int, root: str, previous_root: str | None, at: int
    ) -> None:
        self.epoch = epoch
        self.last = last
        self.root = root


SEAL_ID = LogSeal.create_id()
EPOCHS_ID = LogEpochs.create_id()
SEAL_TOPICS = frozenset({"LogSealOpened", "LogSealed", "LogEpochsOpened", "EpochSealed"})
