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


class Writer:
    """Runs commands on one thread and commits each batch in one transaction."""

    def __init__(
        self,
        app: RelayApp,
        loop: asyncio.AbstractEventLoop,
        on_committed: Committed,
        max_conflict_retries: int = 5,
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
        touched: dict[Any, Any] = {}
        for cmd, out in batch:
            try:
                out.result, aggs = self.app.execute(cmd)
            except RelayError as e:
                out.error = e
                continue
            decided.append((cmd, out, aggs))
            for agg in aggs:
                touched[agg.id] = agg
        if not touched:
            self._hand_over([], outcomes)
            return
        try:
            t0 = time.perf_counter()
            recordings = self.app.save(*touched.values())
            self.last_commit_ms = (time.perf_counter() - t0) * 1000
            self.last_error = None
        except IntegrityError:
            # Another writer (another relay node) got there first: reload and
            # decide again, one command at a time.
            self.app.forget(list(touched))
            self._retry_individually(decided)
            self._hand_over([], [out for out in outcomes if out not in _outs(decided)])
            return
        except (PersistenceError, OSError) as e:
            self.app.forget(list(touched))
            self._store_failed(e, [out for _, out, _ in decided])
            self._hand_over([], outcomes)
            return
        self.batches += 1
        self.commands += len(batch)
        self._mark_positions(recordings, decided)
        self._hand_over(recordings, outcomes)

    def _retry_individually(self, decided: list[tuple[Command, Outcome, list[Any]]]) -> None:
        for cmd, out, _ in decided:
            out.error = None
            for attempt in range(self.max_conflict_retries):
                try:
                    out.result, aggs = self.app.execute(cmd)
                except RelayError as e:
                    out.error = e
                    break
                if not aggs:
                    break
                try:
                    recordings = self.app.save(*aggs)
                except IntegrityError:
                    self.app.forget([a.id for a in aggs])
                    if attempt == self.max_conflict_retries - 1:
                        out.error = StoreUnavailableError(
                            "the write kept conflicting with other relay nodes; retry"
                        )
                    continue
                except (PersistenceError, OSError) as e:
                    self.app.forget([a.id for a in aggs])
                    self._store_failed(e, [out])
                    break
                self._mark_positions(recordings, [(cmd, out, aggs)])
                self._hand_over(recordings, [out])
                break
            else:
                continue
            if out.error is not None:
                self._hand_over([], [out])

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
        # RuntimeError: the loop is closed, so we are shutting down.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.on_committed, recordings, outcomes)


def _outs(decided: list[tuple[Command, Outcome, list[Any]]]) -> list[Outcome]:
    return [out for _, out, _ in decided]
