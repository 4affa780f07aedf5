"""The writer's side of the tamper evidence: seal the log every N events.

Runs on the writer thread, right after a batch commits and before the batch's
requests are answered, so a seal never appears "between" a client's two
reads of the log head. It re-reads the newly committed events from the store
(not from memory): the chain must be over what the store holds, in the
store's order, even if another relay node wrote some of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from relay import chain
from relay.clock import Clock
from relay.domain.seal import SEAL_ID, LogSeal

log = logging.getLogger(__name__)

READ_CHUNK = 5_000


class Sealer:
    """Keeps the chain's last sealed value and seals when ``every`` events are unsealed."""

    def __init__(self, every: int, clock: Clock, max_segment: int | None = None) -> None:
        self.every = every
        self.clock = clock
        # A log that predates sealing (or a long outage) is caught up a bounded
        # step at a time, so one write never waits for a million-event read.
        self.max_segment = max_segment or max(every * 4, every)
        self.upto = 0
        self.hash = chain.GENESIS
        self.head = 0
        self.aggregate: LogSeal | None = None
        self.seals = 0

    @classmethod
    def load(cls, app: Any, every: int, clock: Clock) -> Sealer:
        """The sealer as the store left it: the last seal's position and hash."""
        s = cls(every, clock)
        s._reload(app)
        return s

    def _reload(self, app: Any) -> None:
        self.aggregate = None
        self.upto, self.hash = 0, chain.GENESIS
        last = app.recorder.select_events(SEAL_ID, desc=True, limit=5)
        for stored in last:
            if stored.topic == "LogSealed":
                state = app.mapper.transcoder.decode(stored.state)
                self.upto = int(state["upto"])
                self.hash = bytes.fromhex(state["hash"])
                break
        else:
            # The last seal may be archived (relay.store.archiver): the aggregate,
            # loaded from its snapshot, still knows where the chain stands.
            try:
                agg = app.repository.get(SEAL_ID)
            except AggregateNotFoundError:  # never sealed
                pass
            else:
                if agg.upto:
                    self.upto, self.hash = int(agg.upto), bytes.fromhex(agg.hash)
        self.head = app.recorder.max_notification_id() or 0

    def committed(self, recordings: list[Any]) -> None:
        """Note what the writer just committed (called on the writer thread)."""
        if recordings:
            self.head = max(self.head, recordings[-1].notification.id)

    def due(self) -> bool:
        return self.every > 0 and self.head - self.upto >= self.every

    def seal(self, app: Any, save: Callable[[list[Any]], list[Any]] | None = None) -> list[Any]:
        """Record one seal if due; returns its recordings (empty when not due).

        ``save`` is the writer's own save (so its bookkeeping sees the seal too).
        """
        if not self.due():
            return []
        notes: list[Any] = []
        after = self.upto
        while len(notes) < self.max_segment:
            batch = app.recorder.select_notifications(
                start=after,
                limit=min(READ_CHUNK, self.max_segment - len(notes)),
                inclusive_of_start=False,
            )
            if not batch:
                break
            notes.extend(batch)
            after = batch[-1].id
        if not notes:
            return []
        h, values = chain.fold(self.hash, notes)
        agg = self.aggregate
        if agg is None:
            try:
                agg = app.repository.get(SEAL_ID)
            except AggregateNotFoundError:
                agg = LogSeal(at=self.clock.now_ms())
        if agg.upto != self.upto:
            # Another relay node sealed since we last looked (our copy was dropped or
            # never loaded): sealing from our stale position would record a segment
            # that overlaps its seal. Take its seal as ours and seal after it.
            self._reload(app)
            return []
        agg.seal(
            first=notes[0].id,
            upto=notes[-1].id,
            count=len(notes),
            hash=h.hex(),
            digests=chain.pack_digests(values),
            at=self.clock.now_ms(),
        )
        try:
            recordings = save([agg]) if save is not None else app.save(agg)
        except IntegrityError:
            # Another relay node sealed first: take its seal as ours and try later.
            self._reload(app)
            return []
        except Exception:
            self.aggregate = None  # its pending seal never reached the store
            raise
        self.aggregate = agg
        self.upto, self.hash = notes[-1].id, h
        self.seals += 1
        self.committed(list(recordings))
        return list(recordings)
