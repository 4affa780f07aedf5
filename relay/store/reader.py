"""The read-through log: archived positions, then live ones, in order, with no seam.

Every reader of the log (``GET /api/log``, history, ``?at=``, SSE resumes,
the read-model rebuild and every ``relay audit`` command) goes through a
``LogReader``: it implements the same protocol as relay.audit.log's readers
(``head``, ``first``, ``select``, ``decode``, ``of_aggregate``), so the
replayer, verify and export work unchanged over an archived log.

The archive always covers a prefix ``[1, covered_upto]`` of the log; the live
store holds everything after it (and, while an epoch is being archived,
some of the same positions, which are then never read from the live store).

The seam: the archiver deletes live rows only after their segment is
published. So if a live read raced with an archiving and found the rows it
wanted gone, the segment holding them is already visible: after each live
read we re-list the archive, and if it grew past where we started reading
live, we read again. No position is skipped or read twice.
"""

from __future__ import annotations

import heapq
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification

from relay.store.archive import Archive
from relay.store.segment import Interval


class LogReader:
    """Archive first, then the live store (a relay.audit.log reader: AppLog or SqliteLog)."""

    def __init__(self, live: Any, archive: Archive | None) -> None:
        self.live = live
        self.archive = archive
        self.mapper = getattr(live, "mapper", None)

    def head(self) -> int:
        """The newest position (the live store always keeps the newest row)."""
        head = int(self.live.head())
        if self.archive is not None:
            head = max(head, self.archive.covered_upto())
        return head

    def first(self) -> int:
        """The oldest position still held, archived or live (0: empty log)."""
        if self.archive is not None:
            self.archive.refresh()
            first = self.archive.first_position()
            if first:
                return first
        return int(self.live.first())

    def decode(self, notification: Notification) -> Any:
        return self.live.decode(notification)

    def covered_upto(self) -> int:
        return self.archive.covered_upto() if self.archive is not None else 0

    def select(self, after: int, limit: int, stop: int | None = None) -> list[Notification]:
        """Up to ``limit`` events after ``after`` (and at most ``stop``), oldest first."""
        archive = self.archive
        if archive is None:
            return list(self.live.select(after, limit, stop))
        while True:
            covered = archive.covered_upto()
            out: list[Notification] = []
            if after < covered:
                out = archive.select(after, limit, stop)
                if len(out) >= limit or (stop is not None and stop <= covered):
                    return out
            live = list(self.live.select(max(after, covered), limit - len(out), stop))
            # Live rows may have left for a segment published since we looked: look again.
            if archive.refresh() and archive.covered_upto() > covered:
                continue
            return out + live

    def folding(self) -> FoldingReader:
        """This log as the read models fold it: thinned runs stand in as their ends."""
        return FoldingReader(self)

    def of_aggregate(self, aggregate_id: UUID, after: int, limit: int) -> tuple[list[Notification], int]:
        """One aggregate's events after ``after`` and the position to ask from next."""
        archive = self.archive
        if archive is None:
            return self.live.of_aggregate(aggregate_id, after, limit)  # type: ignore[no-any-return]
        while True:
            covered = archive.covered_upto()
            found: list[Notification] = []
            if after < covered:
                found = archive.of_aggregate(aggregate_id, after, limit)
                if len(found) >= limit:
                    return found, found[-1].id
            start = max(after, covered)
            notes, nxt = self.live.of_aggregate(aggregate_id, start, limit - len(found))
            archive.refresh()
            if archive.covered_upto() > covered:
                continue
            return found + [n for n in notes if n.id > covered], max(nxt, start)

    def intervals(self, after: int, upto: int, seals: bool = False) -> list[Interval]:
        """Thinned heartbeat runs that start in ``(after, upto]`` (``seals``: rolling seals' too)."""
        if self.archive is None:
            return []
        return self.archive.intervals(after, upto, seals=seals)


def run_ends(iv: Interval) -> list[Notification]:
    """A thinned run's first and last heartbeat, rebuilt for folding (not for proofs).

    A heartbeat's effect on the read models (online, ``lastSeen`` = its time)
    depends only on the run's first and last ones, so folding these two gives
    the state the whole run gave. Their stored bytes are not the originals
    (the library's wall-clock ``timestamp`` is gone): never hash or show them.
    """
    oid = UUID(iv.originator_id)
    ends = [(iv.first_position, iv.first_version, iv.first_at)]
    if iv.count > 1:
        ends.append((iv.last_position, iv.last_version, iv.last_at))
    return [
        Notification(
            id=position,
            originator_id=oid,
            originator_version=version,
            topic=iv.topic,
            state=orjson.dumps({"timestamp": at * 1000, "at": at}),
        )
        for position, version, at in ends
    ]


class FoldingReader:
    """A LogReader for folds (read-model rebuilds, replays): kept events plus run ends.

    Over a thinned stretch the read models rebuilt from position 0 must still
    equal the live ones (entities' status and ``lastSeen``); each interval
    contributes its first and last heartbeat at their own positions.
    """

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        self.archive = reader.archive
        self.mapper = reader.mapper

    def head(self) -> int:
        return self.reader.head()

    def first(self) -> int:
        return self.reader.first()

    def decode(self, notification: Notification) -> Any:
        return self.reader.decode(notification)

    def of_aggregate(self, aggregate_id: UUID, after: int, limit: int) -> tuple[list[Notification], int]:
        return self.reader.of_aggregate(aggregate_id, after, limit)

    def intervals(self, after: int, upto: int) -> list[Interval]:
        return self.reader.intervals(after, upto)

    def select(self, after: int, limit: int, stop: int | None = None) -> list[Notification]:
        page = self.reader.select(after, limit, stop)
        covered = self.reader.covered_upto()
        if self.archive is None or after >= covered:
            return page
        archived = [n for n in page if n.id <= covered]
        upper = archived[-1].id if len(archived) >= limit else covered
        if stop is not None:
            upper = min(upper, stop)
        ends = [
            n
            for iv in self.archive.intervals(after, upper, touching=True)
            for n in run_ends(iv)
            if after < n.id <= upper
        ]
        if not ends:
            return page
        ends.sort(key=lambda n: n.id)
        return list(heapq.merge(page, ends, key=lambda n: n.id))
