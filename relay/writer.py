"""The single writer: one thread, live aggregates, group commit.

The library is synchronous and SQLite has one writer at a time, so every
command goes through this one thread (ADR 0004). It takes whatever commands
are waiting, decides each against the live aggregates, and saves all their
events in one transaction; then it hands the recordings to the event loop,
which applies them to the read models before any of those requests is
answered (read-your-writes).

The writer owns its outcomes (ADR 0030): each waits, keyed by the last log
position its command wrote, until whoever applies the log says
``applied(N)`` ("the read models hold everything up to N"). The applier
knows nothing of outcomes or futures, and the writer nothing of read models.
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

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    PersistenceError,
)

from relay.application import RelayApp
from relay.commands import Command
from relay.domain.errors import (
    ConflictError,
    InvalidInputError,
    RelayError,
    StoreUnavailableError,
)
from relay.store.transcoder import UnstorableEventError

log = logging.getLogger(__name__)

MAX_BATCH = 512
LOCK_AFTER_CONFLICTS = 2  # optimistic attempts before a batch is decided under the log's lock
_STOP = object()
# Failures of the store itself, not of one command's data: fail the group, don't split it.
_STORE_DOWN = (OperationalError, InterfaceError, InternalError, OSError)


class _Undecidable(Exception):
    """Raised inside ``_decide`` when a command failed part-way through its decision."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


class Outcome:
    """What the writer tells the loop about one command."""

    __slots__ = ("error", "future", "position", "result")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.position = 0  # the last log position this command wrote (0: none)


Deliver = Callable[[list[Any]], None]
CommitObserver = Callable[[list[Any], float], None]


class Writer:
    """Runs commands on one thread and commits each batch in one transaction."""

    def __init__(
        self,
        app: RelayApp,
        loop: asyncio.AbstractEventLoop,
        deliver: Deliver,
        max_conflict_retries: int = 12,
        applied_upto: int = 0,
    ) -> None:
        """``deliver(recordings)`` is called on the loop with each batch's recordings,
        in commit order; whoever applies them calls ``applied(N)`` (then or later).
        ``applied_upto``: the position the read models already hold."""
        self.app = app
        self.loop = loop
        self.deliver = deliver
        self.max_conflict_retries = max_conflict_retries
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relay-writer", daemon=True)
        # On the loop only: how far the read models are applied, and the
        # outcomes of commands written beyond that, each answered by ``applied``.
        self.applied_upto = applied_upto
        self._waiting: list[Outcome] = []
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

    def applied(self, upto: int) -> None:
        """On the loop: the read models now hold every position up to ``upto``.

        Answers each waiting command whose writes are all at or below it, so a
        write returns only once it is durable and visible (read-your-writes).
        """
        if upto > self.applied_upto:
            self.applied_upto = upto
        if not self._waiting:
            return
        still: list[Outcome] = []
        for out in self._waiting:
            if out.position <= self.applied_upto:
                if not out.future.done():
                    out.future.set_result(out.result)
            else:
                still.append(out)
        self._waiting = still

    def _answer(self, recordings: list[Any], outcomes: list[Outcome]) -> None:
        """On the loop: deliver a batch's recordings, then answer what is applied already."""
        if recordings:
            self.deliver(recordings)
        for out in outcomes:
            if out.error is not None:
                if not out.future.done():
                    out.future.set_exception(out.error)
            elif out.position <= self.applied_upto:
                if not out.future.done():
                    out.future.set_result(out.result)
            else:
                self._waiting.append(out)

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
                # Which copies got ahead of the log is unknown here: drop them
                # all; each is loaded from the store again when next needed.
                self.app.forget(list(self.app.live))
                for _, out in batch:
                    if out.error is None:
                        out.error = e
                self._hand_over([], [out for _, out in batch])
            if stop:
                return

    def _process(self, batch: list[tuple[Command, Outcome]]) -> None:
        recordings: list[Any] = []
        self._commit(batch, recordings)
        if recordings:
            self.batches += 1
            if self.sealer is not None or self.epochs is not None:
                recordings = [*recordings, *self._sealed(recordings)]
        self._hand_over(recordings, [out for _, out in batch])

    def _commit(self, group: list[tuple[Command, Outcome]], recordings: list[Any]) -> None:
        """Decide ``group`` on the live aggregates and save it in one transaction.

        Appends what was stored to ``recordings`` and leaves every outcome
        final. Whatever fails, no live aggregate is left ahead of the log: a
        copy whose events were not stored is forgotten and loaded again when
        next needed. A command that cannot be stored fails alone (ADR 0011):
        the group is split in two and each half decided again, in order, until
        the command is alone, so the others land as if it had never come.
        """
        exclusive = getattr(self.app.recorder, "exclusive", None)  # PostgreSQL only
        decided: list[tuple[Command, Outcome, list[Any]]] = []
        attempt = -1
        while attempt + 1 < self.max_conflict_retries:
            attempt += 1
            locked = exclusive is not None and attempt >= LOCK_AFTER_CONFLICTS
            touched: dict[Any, Any] = {}
            decided = []
            head_before = self.committed_head
            try:
                with exclusive() if locked else contextlib.nullcontext():
                    decided, touched = self._decide(group)
                    saved = self._save(list(touched.values())) if touched else []
            except IntegrityError as e:
                # Another writer (another relay node) changed one of these
                # aggregates since we loaded it. Nothing of the group was
                # stored: forget our copies and decide the whole group again on
                # fresh ones, after a short random pause so that two nodes
                # hammering one entity do not stay in lockstep; from the third
                # attempt on, under the log's insert lock, which cannot clash.
                self.app.forget(list(touched))
                self.committed_head = head_before  # a locked attempt can fail after its insert
                if locked or (exclusive is None and attempt >= 1):
                    # No other writer can have raced us (under the lock, or a
                    # second time on fresh copies with SQLite's one writer):
                    # one command's events clash with the log by themselves.
                    self._split(group, recordings, e)
                    return
                self.conflicts += 1
                if not locked:
                    time.sleep(random.uniform(0, 0.001 * 2**attempt))
                continue
            except _Undecidable as e:
                # A command failed half-way through its decision: any aggregate
                # may hold part of it, so drop every copy with unsaved events
                # and decide the others again without it.
                self.app.forget_pending()
                self.committed_head = head_before
                group = [item for item in group if item[1] is not e.outcome]
                if not group:
                    return
                attempt -= 1  # not a conflict: this try does not count
                continue
            except _STORE_DOWN as e:
                # The store itself refused: every command would fail the same way.
                self.app.forget(list(touched))
                self.committed_head = head_before
                self._store_failed(e, [out for _, out, _ in decided])
                return
            except Exception as e:
                # Something in this group's events cannot be stored (an event
                # that cannot be encoded, a value the database refuses). Nothing
                # of it was stored; find the command by halving the group.
                self.app.forget(list(touched))
                self.committed_head = head_before
                self._split(group, recordings, e)
                return
            if saved:
                self.commands += len(group)
                self._mark_positions(saved, decided)
                recordings.extend(saved)
            return
        log.warning(
            "gave up a batch of %d after %d conflicts", len(group), self.max_conflict_retries
        )
        for _, out, _ in decided:
            out.error = StoreUnavailableError(
                "the write kept conflicting with other relay nodes' writes; nothing was written, retry"
            )

    def _split(
        self, group: list[tuple[Command, Outcome]], recordings: list[Any], e: BaseException
    ) -> None:
        """Commit each half of a group that cannot be stored whole, in order;
        a command alone that still cannot be stored fails with ``e``."""
        if len(group) > 1:
            half = len(group) // 2
            self._commit(group[:half], recordings)
            self._commit(group[half:], recordings)
        else:
            self._unstorable(e, group[0][1])

    def _decide(
        self, group: list[tuple[Command, Outcome]]
    ) -> tuple[list[tuple[Command, Outcome, list[Any]]], dict[Any, Any]]:
        """Decide every command against the live aggregates; refusals are final outcomes."""
        decided: list[tuple[Command, Outcome, list[Any]]] = []
        touched: dict[Any, Any] = {}
        for cmd, out in group:
            out.result, out.error, out.position = None, None, 0
            try:
                out.result, aggs = self.app.execute(cmd)
            except StoreUnavailableError as e:  # loading an aggregate failed, maybe mid-decision
                self.last_error = e.message
                out.error = e
                raise _Undecidable(out) from e
            except RelayError as e:  # a refusal: decided before anything changed
                out.error = e
                continue
            except Exception as e:  # loading failed below us, or a bug in a decision
                if isinstance(e, (PersistenceError, OSError)):
                    self._store_failed(e, [out])
                else:
                    log.exception("a command failed while being decided: %r", cmd)
                    out.error = e
                raise _Undecidable(out) from e
            decided.append((cmd, out, aggs))
            for agg in aggs:
                touched[agg.id] = agg
        return decided, touched

    @staticmethod
    def _unstorable(e: BaseException, out: Outcome) -> None:
        """The outcome of the one command whose events could not be stored."""
        if isinstance(e, RelayError):
            out.error = e
        elif isinstance(e, IntegrityError):
            log.error("a command's events clash with the log: %s", e)
            out.error = ConflictError(
                f"the command's events clash with what the log holds ({e}); nothing was written"
            )
        elif isinstance(e, UnstorableEventError):
            log.warning("refused a command whose events cannot be stored: %s", e)
            out.error = InvalidInputError("body", f"cannot be recorded ({e}); nothing was written")
        else:
            log.error("a command's events could not be stored", exc_info=e)
            out.error = e

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
            self.loop.call_soon_threadsafe(self._answer, recordings, outcomes)

