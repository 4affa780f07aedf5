"""The single writer: one thread, live aggregates, group commit.

The library is synchronous and SQLite has one writer at a time, so every
command goes through this one thread (ADR 0004). It takes whatever commands
are waiting, decides each against the live aggregates, and saves all their
events in one transaction; then it hands the recordings to the event loop,
which applies them to the read models before any of those requests is
answered (read-your-writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import IntegrityError, PersistenceError

from relay.application import RelayApp
from relay.commands import Command
from relay.domain.errors import RelayError, StoreUnavailableError

log = logging.getLogger(__name__)

MAX_BATCH = 512
LOCK_AFTER_CONFLICTS = 2  # optimistic attempts before a batch is decided under the log's lock
_STOP = object()


class Outcome:
    """What the writer tells the loop about one command."""

    __slots__ = ("error", "future", "position", "result")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.position = 0  # the last log position this command wrote (0: none)


Committed = Callable[[list[Any], list[Outcome]], None]
CommitObserver = Callable[[list[Any], float], None]


class Writer:
    """Runs commands on one thread and commits each batch in one transaction."""

    def __init__(
        self,
        app: RelayApp,
        loop: asyncio.AbstractEventLoop,
        on_committed: Committed,
        max_conflict_retries: int = 12,
    ) -> None:
        self.app = app
        self.loop = loop
        self.on_committed = on_committed
        self.max_conflict_retries = max_conflict_retries
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-writer", daemon=True)
        self.last_error: str | None = None
        self.last_commit_ms: float = 0.0
        self.batches = 0
        self.commands = 0
        self.conflicts = 0  # batches decided again because another node wrote first
        # The newest position this writer committed. Read by the loop (a
        # NOTIFY for a position at or below it is our own commit, whose
        # hand-over is on its way) while this thread writes it: an int, so safe.
        self.committed_head = 0
        # Called on this thread after each commit with (recordings, seconds): metrics.
        self.observe_commit: CommitObserver | None = None
        # The tamper evidence (relay.audit.sealer.Sealer): seals the log every N
        # events, on this thread, before the batch that made it due is answered.
        self.sealer: Any = None
        # The epochs (relay.audit.epochs.EpochSealer): same contract as the sealer.
        self.epochs: Any = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what was queued, then stop."""
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, cmd: Command) -> asyncio.Future[Any]:
        """Queue ``cmd``; the future resolves once it is committed and applied."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._queue.put((cmd, Outcome(fut)))
        return fut

    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._process(batch)
            except BaseException as e:  # never let the writer die silently
                log.exception("writer failed on a batch")
                for _, out in batch:
                    if out.error is None:
                        out.error = e
                self._hand_over([], [out for _, out in batch])
            if stop:
                return

    def _process(self, batch: list[tuple[Command, Outcome]]) -> None:
        outcomes = [out for _, out in batch]
        decided: list[tuple[Command, Outcome, list[Any]]] = []
        exclusive = getattr(self.app.recorder, "exclusive", None)  # PostgreSQL only
        for attempt in range(self.max_conflict_retries):
            locked = exclusive is not None and attempt >= LOCK_AFTER_CONFLICTS
            touched: dict[Any, Any] = {}
            decided = []
            head_before = self.committed_head
            try:
                with exclusive() if locked else contextlib.nullcontext():
                    decided, touched = self._decide(batch)
                    recordings = self._save(list(touched.values())) if touched else []
            except IntegrityError:
                # Another writer (another relay node) changed one of these
                # aggregates since we loaded it. Nothing of the batch was
                # stored: forget our copies and decide the whole batch again on
                # fresh ones, after a short random pause so that two nodes
                # hammering one entity do not stay in lockstep; from the third
                # attempt on, under the log's insert lock, which cannot clash.
                self.app.forget(list(touched))
                self.committed_head = head_before  # a locked attempt can fail after its insert
                self.conflicts += 1
                if not locked:
                    time.sleep(random.uniform(0, 0.001 * 2**attempt))
                continue
            except (PersistenceError, OSError) as e:
                self.app.forget(list(touched))
                self.committed_head = head_before
                undecided = [out for _, out in batch if out.error is None] if not decided else []
                self._store_failed(e, [out for _, out, _ in decided] + undecided)
                self._hand_over([], outcomes)
                return
            if not touched:
                self._hand_over([], outcomes)
                return
            self.batches += 1
            self.commands += len(batch)
            self._mark_positions(recordings, decided)
            if self.sealer is not None or self.epochs is not None:
                recordings = [*recordings, *self._sealed(recordings)]
            self._hand_over(recordings, outcomes)
            return
        log.warning("gave up a batch of %d after %d conflicts", len(batch), self.max_conflict_retries)
        for _, out, _ in decided:
            out.error = StoreUnavailableError(
                "the write kept conflicting with other relay nodes' writes; nothing was written, retry"
            )
        self._hand_over([], outcomes)

    def _decide(
        self, batch: list[tuple[Command, Outcome]]
    ) -> tuple[list[tuple[Command, Outcome, list[Any]]], dict[Any, Any]]:
        """Decide every command against the live aggregates; refusals are final outcomes."""
        decided: list[tuple[Command, Outcome, list[Any]]] = []
        touched: dict[Any, Any] = {}
        for cmd, out in batch:
            out.result, out.error, out.position = None, None, 0
            try:
                out.result, aggs = self.app.execute(cmd)
            except RelayError as e:
                out.error = e
                continue
            except (PersistenceError, OSError) as e:  # loading an aggregate failed
                self._store_failed(e, [out])
                continue
            decided.append((cmd, out, aggs))
            for agg in aggs:
                touched[agg.id] = agg
        return decided, touched

    def _sealed(self, recordings: list[Any]) -> list[Any]:
        """Seals' recordings when due; a failed seal never fails the batch."""
        out: list[Any] = []
        for sealer in (self.sealer, self.epochs):
            if sealer is None:
                continue
            try:
                sealer.committed([*recordings, *out])
                out.extend(sealer.seal(self.app, save=self._save))
            except Exception:
                log.exception("could not seal the log; will try again after the next write")
        return out

    def _save(self, aggs: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        recordings = self.app.save(*aggs)
        seconds = time.perf_counter() - t0
        self.last_commit_ms = seconds * 1000
        self.last_error = None
        if recordings:
            self.committed_head = max(self.committed_head, recordings[-1].notification.id)
        if self.observe_commit is not None:
            try:
                self.observe_commit(recordings, seconds)
            except Exception:
                log.exception("a commit observer failed")
        return recordings

    def _store_failed(self, e: BaseException, outs: list[Outcome]) -> None:
        self.last_error = f"{type(e).__name__}: {e}"
        log.error("the event store refused a write: %s", self.last_error)
        for out in outs:
            out.error = StoreUnavailableError(
                "the event store cannot record right now (" + self.last_error + "); "
                "nothing was written, retry later"
            )

    @staticmethod
    def _mark_positions(
        recordings: list[Any], decided: list[tuple[Command, Outcome, list[Any]]]
    ) -> None:
        """Each command waits for the last position of the aggregates it touched."""
        last: dict[Any, int] = {}
        for r in recordings:
            last[r.domain_event.originator_id] = r.notification.id
        for _, out, aggs in decided:
            out.position = max((last.get(a.id, 0) for a in aggs), default=0)

    def _hand_over(self, recordings: list[Any], outcomes: list[Outcome]) -> None:
        if recordings and self.sealer is not None:
            self.sealer.committed(recordings)
        if recordings and self.epochs is not None:
            self.epochs.committed(recordings)
        # RuntimeError: the loop is closed, so we are shutting down.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.on_committed, recordings, outcomes)

