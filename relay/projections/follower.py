"""The tail follower: applies the log to the read models, in order, once.

Runs on the event loop, so queries never see a half-applied event. Our own
writer hands over what it just committed (no re-read); anything else (a gap,
another relay node's writes) is fetched from the store from the last applied
position, never assuming position+1 (PostgreSQL can burn ids).

Listeners (the SSE hub) get each applied event with what it changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from relay.application import RelayApp
from relay.projections.readmodels import Change, ReadModels
from relay.writer import Outcome

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "readmodels.json"
FETCH_LIMIT = 5_000
Listener = Callable[[int, Any, list[Change]], None]


# -- checkpoints -----------------------------------------------------------------


def checkpoint_bytes(app: RelayApp, rm: ReadModels, anchor: list[Any] | None) -> bytes:
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


def _anchor_at(app: RelayApp, position: int, reader: Any = None) -> list[Any] | None:
    if position == 0:
        return None
    if reader is not None:  # the position may be archived
        found = reader.select(position - 1, 1)
    else:
        found = app.recorder.select_notifications(start=position, limit=1)
    if not found or found[0].id != position:
        return None
    n = found[0]
    return [n.originator_id.hex, n.originator_version]


def load_read_models(
    app: RelayApp, data_dir: Path | None, reader: Any = None
) -> tuple[ReadModels, str]:
    """Checkpoint plus tail, or a rebuild from 0 when the checkpoint does not fit the log.

    ``reader`` (relay.store.reader.LogReader) reads archived positions too: a
    rebuild from position 0 folds the archive first.
    """
    rm = ReadModels()
    how = "rebuilt from position 0"
    path = data_dir / CHECKPOINT_FILE if data_dir is not None else None
    if path is not None and path.exists():
        try:
            state = orjson.loads(path.read_bytes())
            anchor = state.pop("anchor", None)
            candidate = ReadModels.from_state(state)
            if candidate.position == 0 or anchor == _anchor_at(app, candidate.position, reader):
                rm = candidate
                how = f"checkpoint at {rm.position} plus tail"
            else:
                log.warning("checkpoint does not match the log; rebuilding from position 0")
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("checkpoint unreadable; rebuilding from position 0", exc_info=True)
    catch_up(app, rm, reader=reader)
    return rm, how


def catch_up(app: RelayApp, rm: ReadModels, until: int | None = None, reader: Any = None) -> int:
    """Fold every stored event after ``rm.position`` (up to ``until``); returns how many."""
    count = 0
    to_domain_event = app.mapper.to_domain_event
    while True:
        if reader is not None:
            batch = reader.select(rm.position, FETCH_LIMIT, until)
        else:
            batch = app.recorder.select_notifications(
                start=rm.position, limit=FETCH_LIMIT, stop=until, inclusive_of_start=False
            )
        if not batch:
            return count
        for n in batch:
            rm.apply(n.id, to_domain_event(n))
        count += len(batch)
        if len(batch) < FETCH_LIMIT:
            return count


# -- the follower ------------------------------------------------------------------


class TailFollower:
    """Applies committed events to the read models and releases waiting writes."""

    def __init__(
        self,
        app: RelayApp,
        rm: ReadModels,
        data_dir: Path | None,
        checkpoint_every: int,
    ) -> None:
        self.app = app
        self.rm = rm
        self.data_dir = data_dir
        self.checkpoint_every = checkpoint_every
        self.listeners: list[Listener] = []
        self._waiting: list[Outcome] = []
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._fetch_again = False
        self.head_seen = rm.position  # the newest position known to exist
        self.reader: Any = None  # relay.store.reader.LogReader: a fetch far behind reads the archive

    # called on the loop by the writer
    def on_committed(self, recordings: list[Any], outcomes: list[Outcome]) -> None:
        if recordings:
            self.head_seen = max(self.head_seen, recordings[-1].notification.id)
            if self._fetching is None and recordings[0].notification.id == self.rm.position + 1:
                for r in recordings:
                    self._apply(r.notification.id, r.domain_event)
            else:
                self.poke()
        for out in outcomes:
            if out.error is not None:
                if not out.future.done():
                    out.future.set_exception(out.error)
            elif out.position <= self.rm.position:
                if not out.future.done():
                    out.future.set_result(out.result)
            else:
                self._waiting.append(out)
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
        try:
            while True:
                self._fetch_again = False
                start = self.rm.position
                notes = await loop.run_in_executor(None, self._select_after, start)
                for n in notes:
                    if n.id > self.rm.position:
                        self._apply(n.id, self.app.mapper.to_domain_event(n))
                self._release()
                if len(notes) < FETCH_LIMIT and not self._fetch_again:
                    return
        except Exception:
            log.exception("could not read the log's tail; will retry on the next write")
        finally:
            self._fetching = None
            self._maybe_checkpoint()

    def _select_after(self, start: int) -> Any:
        if self.reader is not None:
            return self.reader.select(start, FETCH_LIMIT)
        return self.app.recorder.select_notifications(
            start=start, limit=FETCH_LIMIT, inclusive_of_start=False
        )

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
        if self._waiting:
            self._release()

    def _release(self) -> None:
        still: list[Outcome] = []
        for out in self._waiting:
            if out.position <= self.rm.position:
                if not out.future.done():
                    out.future.set_result(out.result)
            else:
                still.append(out)
        self._waiting = still

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
            anchor = await loop.run_in_executor(None, _anchor_at, self.app, position)
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
                checkpoint_bytes(self.app, self.rm, _anchor_at(self.app, self.rm.position)),
            )
        except Exception:
            log.warning("could not write the read-model checkpoint", exc_info=True)
