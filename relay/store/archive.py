"""The archive: closed epochs as compressed segments, outside the live store.

Where segments live (ADR 0023):

- SQLite: one file per epoch in ``DATA/archive/`` (``epoch-00000001.full``,
  or ``.thin`` once its heartbeats are thinned), written to a hidden
  ``.new`` file, fsynced, *checked*, then renamed into place and the folder
  fsynced; mode 0600. A reader only ever sees checked segments.
- PostgreSQL: rows of ``relay_archive`` beside the log table, in the same
  schema; ``checked`` flips to true only after the check.

What a segment holds and how is relay.store.segment; how an epoch moves from
the live store to a segment, and how a crash in any phase is finished on the
next start, is ``Archiver`` (relay.store.archiver).

``Archive`` is the read side: which positions the archive covers and their
events, a block at a time, with a small cache. Epochs are archived in order,
so the archive always covers a prefix of the log, ``[1, covered_upto()]``,
and the live store everything after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from attrs import frozen
from eventsourcing.persistence import Notification

from relay import chain, merkle
from relay.store.library import recorder_kind
from relay.store.segment import Interval, SegmentError, SegmentReader, read_header

ARCHIVE_DIR = "archive"
_NAME = re.compile(r"^epoch-(\d{8})\.(full|thin)$")
CACHE_SEGMENTS = 4  # segments whose tables are kept parsed
ADVISORY_KEY = 0x72656C6179_0E  # "relay" + issue 14: the archivers' PostgreSQL advisory lock
CACHE_BLOCKS = 3  # inflated blocks kept (a paging reader reuses the one it is in)


SEAL_TOPIC = "LogSealed"  # the rolling seals' topic: thinned with heartbeats (ADR 0039)


class ArchiveError(Exception):
    """Raised when a segment cannot be written, or does not match its epoch's root."""


@frozen
class Entry:
    """One checked segment in the archive."""

    epoch: int
    kind: str  # "full" or "thin"
    first: int
    last: int
    size: int
    root: str
    at: int  # when the epoch was sealed (ms): thinning's clock
    key: Any  # the store's own handle (a path, or (epoch, kind))


def epoch_root(events: list[Any]) -> bytes:
    """The RFC 9162 root over the events' canonical bytes (relay.chain.link)."""
    return merkle.root([leaf(e) for e in events])


def leaf(e: Any) -> bytes:
    """One stored event's Merkle leaf hash."""
    return merkle.leaf_hash(chain.link(e.id, e.originator_id, e.originator_version, e.topic, e.state))


class SegmentStore(Protocol):
    """Where segment bytes are kept."""

    def entries(self) -> list[Entry]:
        """Every checked segment (both kinds of an epoch when a thinning was cut short)."""
        ...

    def read(self, entry: Entry) -> bytes: ...

    def stage(self, epoch: int, kind: str, data: bytes) -> None:
        """Write ``data`` durably, not yet visible to readers."""
        ...

    def staged(self, epoch: int, kind: str) -> bytes | None: ...

    def publish(self, epoch: int, kind: str) -> None:
        """Make a staged (and checked) segment visible, atomically and durably."""
        ...

    def drop(self, epoch: int, kind: str) -> None:
        """Remove a segment (published or staged); a missing one is fine."""
        ...

    def exclusive(self) -> contextlib.AbstractContextManager[bool]:
        """While held (True), no other process archives into this store."""
        ...


# -- SQLite: files ---------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSegments:
    """Segments as files in ``DATA/archive/``."""

    def __init__(self, data_dir: Path, create: bool = True) -> None:
        self.folder = Path(data_dir) / ARCHIVE_DIR
        if create:
            self.folder.mkdir(mode=0o700, exist_ok=True)
        self._headers: dict[tuple[str, int, int], Entry] = {}

    def _path(self, epoch: int, kind: str) -> Path:
        return self.folder / f"epoch-{epoch:08d}.{kind}"

    def _staging(self, epoch: int, kind: str) -> Path:
        return self.folder / f".epoch-{epoch:08d}.{kind}.new"

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        try:
            scan = list(os.scandir(self.folder))
        except FileNotFoundError:
            return out
        for d in scan:
            m = _NAME.match(d.name)
            if m is None:
                continue
            try:
                st = d.stat()
            except FileNotFoundError:
                continue  # dropped while we looked
            key = (d.name, st.st_size, st.st_mtime_ns)
            entry = self._headers.get(key)
            if entry is None:
                try:
                    with open(d.path, "rb") as f:
                        h = read_header(f.read(64 * 1024 + 64))
                except (OSError, SegmentError):
                    continue  # verify names it; readers skip what they cannot read
                entry = Entry(
                    h["epoch"], h["kind"], h["first"], h["last"], h["size"], h["root"], h["at"], Path(d.path)
                )
                self._headers[key] = entry
            out.append(entry)
        return out

    def read(self, entry: Entry) -> bytes:
        return Path(entry.key).read_bytes()

    def stage(self, epoch: int, kind: str, data: bytes) -> None:
        tmp = self._staging(epoch, kind)
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def staged(self, epoch: int, kind: str) -> bytes | None:
        try:
            return self._staging(epoch, kind).read_bytes()
        except FileNotFoundError:
            return None

    def publish(self, epoch: int, kind: str) -> None:
        os.replace(self._staging(epoch, kind), self._path(epoch, kind))
        _fsync_dir(self.folder)

    def drop(self, epoch: int, kind: str) -> None:
        for p in (self._path(epoch, kind), self._staging(epoch, kind)):
            p.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            _fsync_dir(self.folder)

    def bytes_on_disk(self) -> int:
        try:
            return sum(d.stat().st_size for d in os.scandir(self.folder))
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """One relay process serves a SQLite data folder: nobody else archives into it."""
        yield True


# -- PostgreSQL: a table -------------------------------------------------------------------


class PostgresSegments:
    """Segments as rows of ``relay_archive`` in the log's own database and schema."""

    TABLE = "relay_archive"

    def __init__(self, recorder: Any) -> None:
        from psycopg import sql

        self.datastore = recorder.datastore
        schema = self.datastore.schema or "public"
        self.table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(self.TABLE))
        self.sql = sql
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (epoch bigint NOT NULL, kind text NOT NULL, "
                    "first_position bigint NOT NULL, last_position bigint NOT NULL, "
                    "size bigint NOT NULL, root text NOT NULL, at bigint NOT NULL, body bytea NOT NULL, "
                    "checked boolean NOT NULL DEFAULT false, PRIMARY KEY (epoch, kind))"
                ).format(self.table)
            )

    def entries(self) -> list[Entry]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                self.sql.SQL(
                    "SELECT epoch, kind, first_position, last_position, size, root, at FROM {} "
                    "WHERE checked ORDER BY epoch"
                ).format(self.table)
            )
            rows = curs.fetchall()
        return [
            Entry(
                r["epoch"], r["kind"], r["first_position"], r["last_position"], r["size"], r["root"], r["at"],
                (r["epoch"], r["kind"]),
            )
            for r in rows
        ]

    def _q(self, text: str) -> Any:
        return self.sql.SQL(text).format(self.table)

    def _body(self, epoch: int, kind: str, checked: bool) -> bytes | None:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                self._q("SELECT body FROM {} WHERE epoch = %s AND kind = %s AND checked = %s"),
                (epoch, kind, checked),
            )
            row = curs.fetchone()
        return bytes(row["body"]) if row else None

    def read(self, entry: Entry) -> bytes:
        body = self._body(entry.epoch, entry.kind, True)
        if body is None:
            raise FileNotFoundError(f"archive segment {entry.epoch} ({entry.kind}) is gone")
        return body

    def stage(self, epoch: int, kind: str, data: bytes) -> None:
        h = read_header(data)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._q("DELETE FROM {} WHERE epoch = %s AND kind = %s AND NOT checked"),
                (epoch, kind),
            )
            curs.execute(
                self.sql.SQL(
                    "INSERT INTO {} (epoch, kind, first_position, last_position, size, root, at, body) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (epoch, kind) DO NOTHING"
                ).format(self.table),
                (epoch, kind, h["first"], h["last"], h["size"], h["root"], h["at"], data),
            )

    def staged(self, epoch: int, kind: str) -> bytes | None:
        return self._body(epoch, kind, False)

    def publish(self, epoch: int, kind: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._q("UPDATE {} SET checked = true WHERE epoch = %s AND kind = %s"),
                (epoch, kind),
            )

    def drop(self, epoch: int, kind: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._q("DELETE FROM {} WHERE epoch = %s AND kind = %s"),
                (epoch, kind),
            )

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """A session advisory lock: of several relay nodes on one log, one archives at a time.

        Taken with ``pg_try_advisory_lock`` on a pooled connection held for the
        run; a node that does not get it skips this run (another node is
        archiving the same epochs). Work done twice would still be safe (every
        phase is idempotent and checked), only wasted.
        """
        # The key is the log's schema hashed with ours: logs in other schemas of the same
        # database (other relays, parallel tests) never hold each other's lock.
        lock = "hashtextextended(%s, %s)"
        key = (self.datastore.schema or "public", ADVISORY_KEY)
        with self.datastore.get_connection() as conn:
            row = conn.execute(f"SELECT pg_try_advisory_lock({lock}) AS got", key).fetchone()
            got = bool(row["got"] if isinstance(row, dict) else row[0])
            try:
                yield got
            finally:
                if got:
                    conn.execute(f"SELECT pg_advisory_unlock({lock})", key)
                    conn.commit()

    def bytes_on_disk(self) -> int:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self._q("SELECT coalesce(sum(length(body)), 0) AS n FROM {}"))
            row = curs.fetchone()
        return int(row["n"]) if row else 0


# -- the read side ----------------------------------------------------------------------------


class Archive:
    """The archived prefix of the log, read a block at a time. Thread-safe."""

    def __init__(self, store: SegmentStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._segments: OrderedDict[Entry, SegmentReader] = OrderedDict()
        self._blocks: OrderedDict[tuple[Entry, int], list[Notification]] = OrderedDict()

    def refresh(self) -> list[Entry]:
        """Re-list the store (another process, or our archiver, may have added segments).

        Of an epoch with both kinds (a thinning cut short) the full one is read.
        """
        by_epoch: dict[int, Entry] = {}
        for e in self.store.entries():
            old = by_epoch.get(e.epoch)
            if old is None or (old.kind == "thin" and e.kind == "full"):
                by_epoch[e.epoch] = e
        entries = sorted(by_epoch.values(), key=lambda e: e.first)
        with self._lock:
            self._entries = entries
        return entries

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def covered_upto(self) -> int:
        """The last archived position (0: nothing archived)."""
        entries = self.entries()
        return entries[-1].last if entries else 0

    def first_position(self) -> int:
        """The oldest position the archive holds an event or interval for (0: none)."""
        entries = self.entries()
        return entries[0].first if entries else 0

    def segment(self, entry: Entry) -> SegmentReader:
        with self._lock:
            r = self._segments.get(entry)
            if r is not None:
                self._segments.move_to_end(entry)
                return r
        r = SegmentReader(self.store.read(entry))
        with self._lock:
            self._segments[entry] = r
            while len(self._segments) > CACHE_SEGMENTS:
                self._segments.popitem(last=False)
        return r

    def block(self, entry: Entry, i: int) -> list[Notification]:
        with self._lock:
            b = self._blocks.get((entry, i))
            if b is not None:
                self._blocks.move_to_end((entry, i))
                return b
        b = self.segment(entry).block(i)
        with self._lock:
            self._blocks[(entry, i)] = b
            while len(self._blocks) > CACHE_BLOCKS:
                self._blocks.popitem(last=False)
        return b

    def _blocks_after(self, after: int, stop: int) -> Iterator[list[Notification]]:
        for entry in self.entries():
            if entry.last <= after or entry.first > stop:
                continue
            seg = self.segment(entry)
            for i, b in enumerate(seg.blocks):
                if b.last <= after or b.first > stop:
                    continue
                yield self.block(entry, i)

    def select(self, after: int, limit: int, stop: int | None = None) -> list[Notification]:
        """Up to ``limit`` archived events after ``after`` (at most ``stop``), oldest first."""
        stop = 2**62 if stop is None else stop
        out: list[Notification] = []
        for events in self._blocks_after(after, stop):
            lo = 0
            if events and events[0].id <= after:
                lo = _bisect_after(events, after)
            for e in events[lo:]:
                if e.id > stop or len(out) >= limit:
                    return out
                out.append(e)
        return out

    def of_aggregate(self, aggregate_id: UUID, after: int, limit: int) -> list[Notification]:
        """Up to ``limit`` archived events of one aggregate after ``after``."""
        out: list[Notification] = []
        for entry in self.entries():
            if entry.last <= after:
                continue
            seg = self.segment(entry)
            k = seg.oid_index.get(aggregate_id)
            if k is None:
                continue
            for i, b in enumerate(seg.blocks):
                if b.last <= after or k not in b.oids:
                    continue
                for e in self.block(entry, i):
                    if e.id > after and e.originator_id == aggregate_id:
                        out.append(e)
                        if len(out) >= limit:
                            return out
        return out

    def intervals(
        self, after: int, upto: int, touching: bool = False, seals: bool = False
    ) -> list[Interval]:
        """Thinned heartbeat runs whose first position is in ``(after, upto]``
        (``touching``: any of whose positions is). ``seals``: the thinned runs of
        rolling seals too (ADR 0039), which are no one's presence: only verify
        and the tests that account for every dropped leaf ask for them."""
        out: list[Interval] = []
        for entry in self.entries():
            if entry.kind != "thin" or entry.last <= after or entry.first > upto:
                continue
            for i in self.segment(entry).intervals:
                if i.topic == SEAL_TOPIC and not seals:
                    continue
                start = i.last_position if touching else i.first_position
                if after < start and i.first_position <= upto:
                    out.append(i)
        out.sort(key=lambda i: i.first_position)
        return out


def _bisect_after(events: list[Notification], after: int) -> int:
    lo, hi = 0, len(events)
    while lo < hi:
        mid = (lo + hi) // 2
        if events[mid].id <= after:
            lo = mid + 1
        else:
            hi = mid
    return lo


def open_archive(app: Any, data_dir: Path | None, create: bool = True) -> Archive:
    """The archive beside ``app``'s store: files on SQLite, a table on PostgreSQL."""
    if recorder_kind(app.recorder) == "postgres":
        store: SegmentStore = PostgresSegments(app.recorder)
    else:
        assert data_dir is not None, "SQLite archives live in the data folder"
        store = FileSegments(data_dir, create=create)
    archive = Archive(store)
    archive.refresh()
    return archive
