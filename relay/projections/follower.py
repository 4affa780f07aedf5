"""The tail follower: applies the log to the read models, in order, once.

Runs on the event loop, so queries never see a half-applied event. Our own
writer hands over what it just committed (no re-read); anything else (a gap,
another relay node's writes) is fetched from the store from the last applied
position, never assuming position+1 (PostgreSQL can burn ids).

Listeners (the SSE hub) get each applied event with what it changed.

It reads the log through a ``ReadableLog`` (relay/store/eventlog.py), never
the application, and says how far it has applied through one plain callable,
``on_applied(N)`` (the writer's ``applied``, which answers the waiting
writes); it publishes the versions it fetched from the store (other nodes'
writes) on a ``KnownVersions`` board, which the writer consults before it
decides on a live copy (ADR 0030).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from relay.projections.readmodels import Change, ReadModels
from relay.store.eventlog import ReadableLog, readable
from relay.store.versions import KnownVersions

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "readmodels.json"
FETCH_LIMIT = 5_000
Listener = Callable[[int, Any, list[Change]], None]
Applied = Callable[[int], None]


# -- checkpoints -----------------------------------------------------------------


def checkpoint_bytes(rm: ReadModels, anchor: list[Any] | None) -> bytes:
    """The read models at ``rm.position`` plus the event found there (the anchor)."""
    state = rm.to_state()
    state["anchor"] = anchor
    return orjson.dumps(state)


def write_checkpoint(path: Path, data: bytes) -> None:
    """Atomically: a torn checkpoint must never replace a good one."""
    import os

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # a leftover keeps its old mode; O_CREAT's 0600 is for new files
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _anchor_at(log_: ReadableLog, position: int) -> list[Any] | None:
    if position == 0:
        return None
    found = log_.select(position - 1, 1)  # through the reader: the position may be archived
    if not found or found[0].id != position:
        return None
    n = found[0]
    return [n.originator_id.hex, n.originator_version]


def load_read_models(
    source: Any, data_dir: Path | None, reader: ReadableLog | None = None
) -> tuple[ReadModels, str]:
    """Checkpoint plus tail, or a rebuild from 0 when the checkpoint does not fit the log.

    Read from ``reader`` when given (relay.store.reader's folding reader reads
    archived positions too: a rebuild from position 0 folds the archive
    first), else from ``source`` (a ``ReadableLog``, or an application's recorder).
    """
    log_ = reader if reader is not None else readable(source)
    rm = ReadModels()
    how = "rebuilt from position 0"
    path = data_dir / CHECKPOINT_FILE if data_dir is not None else None
    if path is not None and path.exists():
        try:
            state = orjson.loads(path.read_bytes())
            anchor = state.pop("anchor", None)
            candidate = ReadModels.from_state(state)
            if candidate.position == 0 or anchor == _anchor_at(log_, candidate.position):
                rm = candidate
                how = f"checkpoint at {rm.position} plus tail"
            else:
                log.warning("checkpoint does not match the log; rebuilding from position 0")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("checkpoint unreadable; rebuilding from position 0", exc_info=True)
    catch_up(log_, rm)
    return rm, how


def catch_up(
    source: Any, rm: ReadModels, until: int | None = None, reader: ReadableLog | None = None
) -> int:
    """Fold every stored event after ``rm.position`` (up to ``until``); returns how many."""
    log_ = reader if reader is not None else readable(source)
    count = 0
    decode = log_.decode
    while True:
        batch = log_.select(rm.position, FETCH_LIMIT, until)
        if not batch:
            return count
        for n in batch:
            rm.apply(n.id, decode(n))
        count += len(batch)
        if len(batch) < FETCH_LIMIT:
            return count


# -- the follower ------------------------------------------------------------------


class TailFollower:
    """Applies committed events to the read models and says how far it has applied."""

    def __init__(
        self,
        log_: ReadableLog | Any,
        rm: ReadModels,
        data_dir: Path | None,
        checkpoint_every: int,
        on_applied: Applied | None = None,
        known_versions: KnownVersions | None = None,
    ) -> None:
        self.log = readable(log_)  # an application is read through its recorder (tests, tools)
        self.rm = rm
        self.data_dir = data_dir
        self.checkpoint_every = checkpoint_every
        self.on_applied = on_applied  # told the applied position after each hand-over or fetch
        self.known_versions = known_versions  # where fetched versions are published
        self.listeners: list[Listener] = []
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._fetch_again = False
        self.head_seen = rm.position  # the newest position known to exist

    # called on the loop by the writer, with what it just committed
    def on_committed(self, recordings: list[Any]) -> None:
        if recordings:
            self.head_seen = max(self.head_seen, recordings[-1].notification.id)
            if self._fetching is None and recordings[0].notification.id == self.rm.position + 1:
                for r in recordings:
                    self._apply(r.notification.id, r.domain_event)
                self._tell_applied()
            else:
                self.poke()
        self._maybe_checkpoint()

    def poke(self, head: int | None = None) -> None:
        """Something was committed that we did not see: fetch from the store."""
        if head is not None:
            self.head_seen = max(self.head_seen, head)
        if self._fetching is not None:
            self._fetch_again = True
            return
        self._fetching = asyncio.get_running_loop().create_task(self._fetch())

    async def _fetch(self) -> None:
        loop = asyncio.get_running_loop()
        decode = self.log.decode
        try:
            while True:
                self._fetch_again = False
                start = self.rm.position
                notes = await loop.run_in_executor(None, self.log.select, start, FETCH_LIMIT)
                seen: list[tuple[Any, int]] = []
                for n in notes:
                    if n.id > self.rm.position:
                        event = decode(n)
                        self._apply(n.id, event)
                        seen.append((event.originator_id, event.originator_version))
                if seen and self.known_versions is not None:
                    # Before the writes waiting on these positions are answered.
                    self.known_versions.publish(seen)
                self._tell_applied()
                if len(notes) < FETCH_LIMIT and not self._fetch_again:
                    return
        except Exception:
            log.exception("could not read the log's tail; will retry on the next write")
        finally:
            self._fetching = None
            self._maybe_checkpoint()

    def _apply(self, position: int, event: Any) -> None:
        emit = bool(self.listeners)
        changes = self.rm.apply(position, event, emit=emit)
        self._since_checkpoint += 1
        self.head_seen = max(self.head_seen, position)
        if emit:
            for listener in self.listeners:
                try:
                    listener(position, event, changes)
                except Exception:
                    log.exception("a log listener failed")

    def _tell_applied(self) -> None:
        if self.on_applied is not None:
            self.on_applied(self.rm.position)

    # -- checkpoints --------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        if self._since_checkpoint >= self.checkpoint_every and self._checkpointing is None:
            self._checkpointing = asyncio.get_running_loop().create_task(self.checkpoint())

    async def checkpoint(self) -> None:
        """Write the read models as of now; the file write runs off the loop."""
        if self.data_dir is None:
            return
        loop = asyncio.get_running_loop()
        try:
            position = self.rm.position
            self._since_checkpoint = 0
            data = orjson.dumps(self.rm.to_state())
            anchor = await loop.run_in_executor(None, _anchor_at, self.log, position)
            body = data[:-1] + b',"anchor":' + orjson.dumps(anchor) + b"}"
            path = self.data_dir / CHECKPOINT_FILE
            await loop.run_in_executor(None, write_checkpoint, path, body)
        except Exception:
            log.warning("could not write the read-model checkpoint", exc_info=True)
        finally:
            self._checkpointing = None

    def checkpoint_now(self) -> None:
        """Synchronous checkpoint for shutdown, when the loop is about to stop."""
        if self.data_dir is None:
            return
        try:
            write_checkpoint(
                self.data_dir / CHECKPOINT_FILE,
                checkpoint_bytes(self.rm, _anchor_at(self.log, self.rm.position)),
            )
        except Exception:
            log.warning("could not write the read-model checkpoint", exc_info=True)
