"""The archiver: closed epochs out of the live store, and old heartbeats thinned.

Archiving one epoch runs five phases, each safe to be cut short by ``kill -9``
at any instruction (ADR 0024):

1. ``write``: read the epoch's live rows, recompute its Merkle root (it must
   equal the root its ``EpochSealed`` recorded, or we stop: the live store
   was changed), and stage the segment durably (not visible to readers);
2. ``check``: read the staged bytes back, decode every event, recompute the
   root from what was decoded; only a segment that proves itself is
   published (atomic rename / ``checked = true``);
3. ``snapshot``: every aggregate with events in the epoch gets a library
   snapshot at a version at least its last in the epoch, so loading it
   (``repository.get``) never needs an archived event;
4. ``delete``: the epoch's live rows are deleted (never the newest row of
   the log: SQLite would hand its position out again);
5. ``record``: the epoch is noted as archived in the archive's state file.

A restart finishes whatever was cut short: a published segment only needs
its snapshots, deletions and record (all idempotent); a staged one is checked
again (or rewritten from the live rows, which are never deleted before a
segment is published). Thinning has the same shape: ``thin.write`` (stage the
thin segment), ``thin.check`` (recompute the root from the kept events and
the cover), ``thin.publish`` and ``thin.drop`` (remove the full segment).

Tests pause a real relay at a named phase (``RELAY_TEST_PHASE=archive.delete``)
and ``kill -9`` it there (tests/loglasts/test_crash_phases.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import orjson
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError

from relay import memory, merkle
from relay.store import segment
from relay.store.archive import SEAL_TOPIC, Archive, ArchiveError, Entry, leaf
from relay.store.segment import Interval, SegmentReader

log = logging.getLogger(__name__)

HEARTBEAT_TOPICS = frozenset({"AgentHeartbeatReceived", "OrchestratorHeartbeatReceived"})
# What thinning drops (ADR 0039): heartbeats, and the rolling seals of the epoch too.
# Inside a thinned epoch the rolling chain cannot be recomputed (its heartbeats are
# gone), so verify never used those seals there; the epoch root and its cover
# hashes prove every kept event. Their runs are intervals like heartbeats' ones.
SEAL_TOPICS = frozenset({SEAL_TOPIC})
THINNED_TOPICS = HEARTBEAT_TOPICS | SEAL_TOPICS
READ_CHUNK = 20_000
DELETE_CHUNK = 20_000
STATE_FILE = "state.json"

PhaseHook = Callable[[str, int], None]


class EpochLike(Protocol):
    """What the archiver needs of a sealed epoch (relay.audit.epochs.EpochInfo)."""

    epoch: int
    first: int
    last: int
    size: int
    root: str
    at: int


def pause_at(spec: str | None, data_dir: Path) -> PhaseHook | None:
    """A test hook: on reaching phase ``spec``, say so in a file and wait to be killed."""
    if not spec:
        return None

    def hook(phase: str, epoch: int) -> None:
        if phase != spec:
            return
        marker = data_dir / "phase-reached"
        with open(marker, "w") as f:
            f.write(f"{phase} {epoch}\n")
            f.flush()
            os.fsync(f.fileno())
        while True:  # until kill -9
            time.sleep(3600)

    return hook


class Archiver:
    """Moves closed epochs to the archive and thins old ones. One per store; not thread-safe."""

    def __init__(
        self,
        app: Any,
        archive: Archive,
        keep_heartbeats_ms: int | None = None,
        hook: PhaseHook | None = None,
    ) -> None:
        self.app = app
        self.archive = archive
        self.store = archive.store
        self.keep_heartbeats_ms = keep_heartbeats_ms  # None: never thin
        self.hook = hook
        self.archived = 0
        self.thinned = 0
        self._sqlite = type(app.recorder).__name__.startswith("SQLite")

    def _phase(self, phase: str, epoch: int) -> None:
        if self.hook is not None:
            self.hook(phase, epoch)

    # -- the whole job ---------------------------------------------------------------

    def run(self, epochs: Sequence[EpochLike], now: int | None = None) -> None:
        """Archive every closed epoch not archived yet, in order; then thin what is due.

        ``epochs``: the sealed epochs whose EpochSealed is still in the live
        store (``sealed_epochs(app.recorder)``); archived ones are known from
        the archive itself.
        """
        done = {e.epoch: e for e in self.archive.refresh()}
        for info in sorted(epochs, key=lambda e: e.epoch):
            entry = done.get(info.epoch)
            if entry is None:
                self.archive_epoch(info)
            else:
                self._finish(info, entry)
        if now is not None and self.keep_heartbeats_ms is not None:
            for entry in self.archive.refresh():
                if entry.kind == "full" and now - entry.at >= self.keep_heartbeats_ms:
                    self.thin_epoch(entry)

    # -- archiving ---------------------------------------------------------------------

    def _live_rows(self, first: int, last: int) -> Iterator[Any]:
        after = first - 1
        while after < last:
            batch = self.app.recorder.select_notifications(
                start=after, limit=READ_CHUNK, stop=last, inclusive_of_start=False
            )
            if not batch:
                return
            yield from batch
            after = batch[-1].id

    def archive_epoch(self, info: EpochLike) -> None:
        """Archive one closed epoch (all five phases)."""
        staged = self.store.staged(info.epoch, "full")
        if staged is None or not self._checks(staged, info, "full"):
            self._phase("archive.write", info.epoch)
            tree = merkle.TreeBuilder()

            def rows() -> Iterator[Any]:
                for n in self._live_rows(info.first, info.last):
                    tree.append(leaf(n))
                    yield n

            try:
                data = segment.encode(
                    epoch=info.epoch,
                    first=info.first,
                    last=info.last,
                    size=info.size,
                    root=info.root,
                    at=info.at,
                    events=rows(),
                )
            except ValueError as e:
                raise ArchiveError(
                    f"epoch {info.epoch}: the live store does not hold its {info.size} events "
                    f"in [{info.first}, {info.last}] ({e}); not archived"
                ) from None
            if tree.root().hex() != info.root:
                raise ArchiveError(
                    f"epoch {info.epoch}: the live rows in [{info.first}, {info.last}] do not hash "
                    "to the root sealed for them; the live store was changed; not archived "
                    "(run relay audit verify)"
                )
            self.store.stage(info.epoch, "full", data)
            self._phase("archive.check", info.epoch)
            staged = self.store.staged(info.epoch, "full")
            if staged is None or not self._checks(staged, info, "full"):
                self.store.drop(info.epoch, "full")
                raise ArchiveError(f"epoch {info.epoch}: the segment read back does not match its root")
        self.store.publish(info.epoch, "full")
        entries = {e.epoch: e for e in self.archive.refresh()}
        self._finish(info, entries[info.epoch])
        self.archived += 1

    def _checks(self, data: bytes, info: EpochLike, kind: str) -> bool:
        """Whether ``data`` decodes to a segment of ``info`` that proves its root."""
        try:
            r = SegmentReader(data)
            if (r.epoch, r.first, r.last, r.size, r.root, r.at, r.kind) != (
                info.epoch, info.first, info.last, info.size, info.root, info.at, kind,
            ):
                return False
            return prove(r)
        except (segment.SegmentError, ValueError) as e:
            log.warning("archive segment of epoch %d does not decode: %s", info.epoch, e)
            return False

    def _finish(self, info: EpochLike, entry: Entry) -> None:
        """The phases after publishing: snapshots, deleting live rows, the record. Idempotent."""
        if not self._live_left(info.first, info.last):
            self._record(info.epoch, entry.kind)
            return
        self._phase("archive.snapshot", info.epoch)
        self._snapshot(info)
        self._phase("archive.delete", info.epoch)
        self._delete(info.first, info.last)
        self._phase("archive.record", info.epoch)
        self._record(info.epoch, entry.kind)

    def _snapshot(self, info: EpochLike) -> None:
        """Snapshot every aggregate of the epoch at or past its last version in the epoch."""
        last_version: dict[UUID, int] = {}
        for n in self._live_rows(info.first, info.last):
            last_version[n.originator_id] = n.originator_version
        snapshots = self.app.snapshots
        if snapshots is None:
            raise ArchiveError("archiving needs the library's snapshots (snapshotting is off)")
        for oid, version in last_version.items():
            have = snapshots.recorder.select_events(oid, desc=True, limit=1)
            if have and have[0].originator_version >= version:
                continue
            agg = self.app.repository.get(oid)
            with contextlib.suppress(IntegrityError):  # the writer took this very snapshot
                snapshots.put([Snapshot.take(agg)])

    def _live_left(self, first: int, last: int) -> bool:
        return bool(
            self.app.recorder.select_notifications(
                start=first, limit=1, stop=last, inclusive_of_start=True
            )
        )

    def _delete(self, first: int, last: int) -> None:
        """Delete live rows in ``[first, last]``, in chunks; never the log's newest row."""
        head = self.app.recorder.max_notification_id() or 0
        if head <= last:
            raise ArchiveError(
                f"refusing to delete up to {last}: the log's newest position {head} would go "
                "and SQLite would hand positions out again"
            )
        ds = self.app.recorder.datastore
        lo = first
        while lo <= last:
            hi = min(last, lo + DELETE_CHUNK - 1)
            with ds.transaction(commit=True) as c:
                if self._sqlite:
                    c.execute("DELETE FROM stored_events WHERE rowid BETWEEN ? AND ?", (lo, hi))
                else:
                    from psycopg import sql

                    c.execute(
                        sql.SQL("DELETE FROM {}.{} WHERE notification_id BETWEEN %s AND %s").format(
                            sql.Identifier(ds.schema or "public"),
                            sql.Identifier(self.app.recorder.events_table_name),
                        ),
                        (lo, hi),
                    )
            lo = hi + 1

    def _record(self, epoch: int, kind: str) -> None:
        folder = getattr(self.store, "folder", None)
        if folder is None:
            return  # PostgreSQL: the checked row is the record
        path = Path(folder) / STATE_FILE
        try:
            state = orjson.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            state = {"epochs": {}}
        if state["epochs"].get(str(epoch)) == kind:
            return
        state["epochs"][str(epoch)] = kind
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(state))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    # -- thinning ------------------------------------------------------------------------

    def thin_epoch(self, info: EpochLike) -> bool:
        """Replace an archived epoch's heartbeats by presence intervals; False if nothing to do."""
        entries = {(e.epoch, e.kind): e for e in self.store.entries()}
        full = entries.get((info.epoch, "full"))
        if full is None:
            return False  # not archived yet, or thinned already
        if (info.epoch, "thin") not in entries:
            staged = self.store.staged(info.epoch, "thin")
            if staged is None or not self._checks(staged, info, "thin"):
                self._phase("thin.write", info.epoch)
                data = thin(SegmentReader(self.store.read(full)))
                self.store.stage(info.epoch, "thin", data)
                self._phase("thin.check", info.epoch)
                staged = self.store.staged(info.epoch, "thin")
                if staged is None or not self._checks(staged, info, "thin"):
                    self.store.drop(info.epoch, "thin")
                    raise ArchiveError(f"epoch {info.epoch}: the thinned segment does not prove its root")
            self._phase("thin.publish", info.epoch)
            self.store.publish(info.epoch, "thin")
        self._phase("thin.drop", info.epoch)
        self.store.drop(info.epoch, "full")
        self.archive.refresh()
        self._record(info.epoch, "thin")
        self.thinned += 1
        return True


def prove(r: SegmentReader) -> bool:
    """Whether a segment's events (and, thinned, its cover) recompute its root.

    Block by block: a million-event epoch is never decoded into memory at once.
    """
    if r.kind == "full":
        tree = merkle.TreeBuilder()
        for i in range(len(r.blocks)):
            for e in r.block(i):
                tree.append(leaf(e))
        return tree.size == r.size and tree.root().hex() == r.root
    kept: dict[int, bytes] = {}
    index = iter(r.leaf_index)
    for i in range(len(r.blocks)):
        for e in r.block(i):
            kept[next(index)] = leaf(e)
    if len(kept) != len(r.leaf_index):
        return False
    try:
        return merkle.root_from_partial(r.size, kept, r.cover).hex() == r.root
    except ValueError:
        return False


def presence(events: Iterable[Any]) -> tuple[list[Any], list[int], list[Interval]]:
    """Split an epoch's events into the kept ones (with leaf indexes) and heartbeat intervals.

    A run is an entity's heartbeats at consecutive versions: any other event
    of that entity (a reap, a re-registration) ends it, so every kept event
    lies between runs, never inside one. The rolling seals (their own
    aggregate, ``LogSealed`` only) make one run per epoch (ADR 0039).
    """
    kept: list[Any] = []
    kept_index: list[int] = []
    runs: dict[UUID, list[Any]] = {}
    out: list[Interval] = []

    def close(oid: UUID) -> None:
        r = runs.pop(oid, None)
        if r is not None:
            out.append(Interval(oid.hex, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]))

    for i, e in enumerate(events):
        oid = e.originator_id
        if e.topic not in THINNED_TOPICS:
            close(oid)
            kept.append(e)
            kept_index.append(i)
            continue
        at = int(orjson.loads(e.state).get("at", 0))
        r = runs.get(oid)
        if r is not None and (r[4] + 1 != e.originator_version or r[0] != e.topic):
            close(oid)
            r = None
        if r is None:
            # topic, first pos, last pos, first version, last version, count, first at, last at, gap
            runs[oid] = [e.topic, e.id, e.id, e.originator_version, e.originator_version, 1, at, at, 0]
            continue
        r[2], r[4], r[5] = e.id, e.originator_version, r[5] + 1
        r[8] = max(r[8], at - r[7])
        r[7] = at
    for oid in list(runs):
        close(oid)
    out.sort(key=lambda iv: iv.first_position)
    return kept, kept_index, out


def thin(r: SegmentReader) -> bytes:
    """The thinned segment of a full one: kept events, intervals, and the cover hashes."""
    leaves = merkle.PackedHashes()  # one buffer, not an object per leaf (relay/memory.py, issue 14)

    def events() -> Iterator[Any]:
        for i in range(len(r.blocks)):
            for e in r.block(i):
                leaves.append(leaf(e))
                yield e

    kept, kept_index, intervals = presence(events())
    cover = merkle.partial_cover(kept_index, leaves)
    return segment.encode(
        epoch=r.epoch,
        first=r.first,
        last=r.last,
        size=r.size,
        root=r.root,
        at=r.at,
        events=kept,
        kind="thin",
        leaf_index=kept_index,
        intervals=intervals,
        cover=cover,
    )


class ArchiveWorker:
    """The archiver's own thread: wakes when an epoch was sealed (or every ``every`` s).

    Archiving reads and compresses a whole epoch; it must never run on the
    writer thread or the event loop. One run at a time; ``run_now`` is for
    the benchmark and tests, which drive a simulated clock and want the
    archive brought up to date at a point of their choosing.
    """

    def __init__(
        self, archiver: Archiver, epochs_due: Callable[[], list[Any]], now_ms: Callable[[], int],
        every: float = 1.0,
    ) -> None:
        import threading

        self.archiver = archiver
        self.epochs_due = epochs_due
        self.now_ms = now_ms
        self.every = every
        self.last_error: str | None = None
        self.runs = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="relay-archiver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)

    def poke(self) -> None:
        self._wake.set()

    def run_now(self) -> None:
        """Archive and thin whatever is due, now, on the calling thread."""
        with self._lock, self.archiver.store.exclusive() as mine:
            if not mine:
                return  # another relay node is archiving this log right now
            self.archiver.run(self.epochs_due(), now=self.now_ms())
            self.runs += 1
            memory.trim()  # what compressing an epoch freed goes back to the system (issue 14)
            self.last_error = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_now()
            except Exception as e:
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("archiving failed; will try again")
            self._wake.wait(self.every)
            self._wake.clear()


def start_archiver(service: Any, sealed_epochs: Callable[[Any], list[Any]]) -> ArchiveWorker:
    """The archiver of a started RelayService (epochs on), on its own thread.

    ``sealed_epochs`` is relay.audit.epochs.sealed_epochs, passed in by the
    service: the store sits below audit and does not import it (ADR 0028).
    """
    s = service.settings
    archiver = Archiver(
        service.app,
        service.archive,
        keep_heartbeats_ms=s.keep_heartbeats_ms,
        hook=pause_at(s.test_phase, service.data_dir),
    )
    recorder = service.app.recorder

    def due() -> list[Any]:
        return sealed_epochs(recorder)

    worker = ArchiveWorker(archiver, due, service.clock.now_ms)
    worker.start()
    return worker
