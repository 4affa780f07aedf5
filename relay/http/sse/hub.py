"""The hub: each applied event encoded once and written to every subscriber that wants it.

One ``EventHub`` per process listens to the tail follower. For each applied
event it encodes the changes (``ReadModels.apply`` says what changed,
``relay.http.sse.names`` how that is called) to their wire bytes once and keeps
them in the ring (``relay.http.sse.ring``); a moment later (after the writes
that event answers, one batch per loop turn) it writes the same bytes to every
matching subscriber's transport. Subscribers with one filter share one
selection; scoped ones are indexed by their orchestrator or agent.

Resuming (``Last-Event-ID``, or ``?since=``) never has a seam between the past
and the live part because the switch happens in one synchronous step on the
loop: copy the ring's frames after the client's position up to what has been
delivered, then join the live set, with no ``await`` in between, so nothing
can be delivered in the middle. A position older than the ring is first
replayed from the store (``relay.http.sse.replay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from relay.audit.log import AppLog
from relay.audit.replay import Replayer, load_anchors, save_anchor
from relay.config import Settings
from relay.domain.errors import ConflictError
from relay.http.past import PastModels
from relay.http.sse.encoding import Frame, chunk, encode, state_blob
from relay.http.sse.filter import Filter
from relay.http.sse.keepalive import keep_alive
from relay.http.sse.replay import fold_stretch, frames_at
from relay.http.sse.ring import Ring
from relay.http.sse.subscriber import Subscriber
from relay.projections.readmodels import Change, ReadModels
from relay.service import RelayService

log = logging.getLogger("relay.http.sse")

SWITCH_BYTES = 256 * 1024  # at most this much is written in the no-await switch to live
MAX_REPLAYS = 2  # resumes replaying from the store at once; more wait their turn
WAIT_FOR_FOLLOWER = 10.0


class EventHub:
    """Encodes each applied event once and writes it to every subscriber that wants it."""

    def __init__(self, service: RelayService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.position = 0
        # Recent positions that produced frames: every one in (ring.floor, position].
        self.ring = Ring(settings.sse_ring)
        # Applied positions are encoded at once (into the ring) but written to
        # subscribers a moment later, in one batch per loop turn: ``delivered``
        # is the newest position written; the ring hands over only up to it.
        self.delivered = 0
        self._pending: list[list[Frame]] = []
        self._flush_scheduled = False
        self._flushed: asyncio.Future[None] | None = None
        self._everyone: dict[tuple[Any, ...], set[Subscriber]] = {}
        self._by_orchestrator: dict[str, dict[tuple[Any, ...], set[Subscriber]]] = {}
        self._by_agent: dict[str, dict[tuple[Any, ...], set[Subscriber]]] = {}
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._replays = asyncio.Semaphore(MAX_REPLAYS)
        self.replayer: Replayer | None = None
        self._past: PastModels | None = None
        self._anchor_bucket = 0
        self.closed = False
        self._open: set[Subscriber] = set()  # every open stream, live or still catching up
        self.opened = 0
        self.cut = 0  # streams ended because they fell behind
        self.replayed = 0  # resumes that needed the store
        # Called as each stream goes live; relay.http.output tells a host's stream
        # which of its agents are watched (frames outside the log, ADR 0031).
        self.on_attach: list[Callable[[Subscriber], None]] = []

    # -- lifetime ------------------------------------------------------------

    def start(self) -> None:
        s = self.service
        assert s.tail is not None and s.app is not None, "start the service first"
        self.position = self.delivered = s.rm.position
        self.ring = Ring(self.settings.sse_ring, floor=self.position)
        # Folds read thinned runs as their ends (relay.store.reader.FoldingReader).
        log_ = s.reader.folding() if s.reader is not None else AppLog(s.app)
        self.replayer = Replayer(log_, every=self.settings.replay_every)
        self._past = PastModels(self.replayer)
        self._anchor_bucket = self.position // self.replayer.every
        blob = state_blob(s.rm) if self.position else None
        if blob is not None:
            self.replayer.add_anchor(self.position, blob)
        s.tail.listeners.append(self.on_applied)
        self._keepalive = asyncio.get_running_loop().create_task(
            keep_alive(self._open, self.settings.keepalive)
        )

    async def close(self) -> None:
        """End every stream (clean shutdown) and stop listening."""
        self.closed = True
        s = self.service
        if s.tail is not None and self.on_applied in s.tail.listeners:
            s.tail.listeners.remove(self.on_applied)
        for sub in list(self._open):
            sub.finish("shutdown")
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive

    @property
    def ring_floor(self) -> int:
        """Positions after this one are in the ring; older ones are replayed from the store."""
        return self.ring.floor

    def past(self) -> PastModels:
        """The ``?at=`` answers, which share this hub's replayer and its anchors."""
        assert self._past is not None, "the hub is not started"
        return self._past

    def log(self) -> Any:
        """The log as replay reads it: through the archive (relay.store.reader)."""
        assert self.replayer is not None, "the hub is not started"
        return self.replayer.log  # type: ignore[return-value]

    # -- the hot path --------------------------------------------------------

    def on_applied(self, position: int, event: Any, changes: list[Change]) -> None:
        """Tail-follower listener: runs on the loop once per applied event."""
        self.position = position
        replayer = self.replayer
        if replayer is not None and position // replayer.every > self._anchor_bucket:
            self._anchor_bucket = position // replayer.every
            blob = state_blob(self.service.rm)
            if blob is not None:
                replayer.add_anchor(position, blob)
                self._keep_on_disk(position, blob, [event.originator_id.hex, event.originator_version])
        if changes:
            frames = encode(position, changes)
            self.ring.remember(position, frames, self.delivered)
            self._pending.append(frames)
        if not self._flush_scheduled:
            # Deliver after the writes this event releases have been answered
            # (their handlers were scheduled just now, and run first), and
            # together with whatever else this loop turn applies.
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._flush)
        if self._waiters:
            self._wake()

    def _flush(self) -> None:
        """Write everything applied since the last flush to its subscribers, once."""
        self._flush_scheduled = False
        frames = [f for fs in self._pending for f in fs]
        self._pending = []
        self.delivered = self.position
        if frames:
            self._deliver(frames)
        flushed, self._flushed = self._flushed, None
        if flushed is not None and not flushed.done():
            flushed.set_result(None)

    async def _next_flush(self) -> None:
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        await self._flushed

    def _keep_on_disk(self, position: int, blob: bytes, identity: list[Any]) -> None:
        """Save an anchor in the data folder (off the loop), for resumes after a restart."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, save_anchor, self.service.data_dir, position, blob, identity)
        fut.add_done_callback(_log_failure)

    async def load_anchors(self) -> None:
        """Anchors a previous run left in the data folder (checked against the log)."""
        replayer = self.replayer
        if replayer is None:
            return
        found = await asyncio.get_running_loop().run_in_executor(
            None, load_anchors, self.service.data_dir, replayer.log, self.position
        )
        for position, blob in found:
            replayer.add_anchor(position, blob)

    def _deliver(self, frames: list[Frame]) -> None:
        self._send(self._everyone, frames)
        if self._by_orchestrator:
            for oid in {f.orchestrator for f in frames if f.orchestrator is not None}:
                groups = self._by_orchestrator.get(oid)
                if groups:
                    self._send(groups, frames)
        if self._by_agent:
            for aid in {a for f in frames for a in f.agents}:
                groups = self._by_agent.get(aid)
                if groups:
                    self._send(groups, frames)

    @staticmethod
    def _send(groups: dict[tuple[Any, ...], set[Subscriber]], frames: list[Frame]) -> None:
        """Select and frame once per group of identical filters, then write to each member."""
        for subs in groups.values():
            if subs:
                payload = next(iter(subs)).filter.select(frames)
                if payload:
                    framed = chunk(payload)
                    for sub in subs:
                        sub.push(payload, framed)

    # -- membership ------------------------------------------------------------

    def _index(self, flt: Filter) -> tuple[dict[str, Any] | None, str | None]:
        if flt.orchestrator is not None:
            return self._by_orchestrator, flt.orchestrator
        if flt.agent is not None:
            return self._by_agent, flt.agent
        return None, None

    def _group(self, flt: Filter) -> set[Subscriber]:
        index, scope = self._index(flt)
        if index is None or scope is None:
            return self._everyone.setdefault(flt.key, set())
        return index.setdefault(scope, {}).setdefault(flt.key, set())

    def opening(self, sub: Subscriber) -> None:
        """Count ``sub`` as open (for keep-alive and shutdown) while it catches up."""
        self._open.add(sub)
        self.opened += 1

    def _attach(self, sub: Subscriber) -> None:
        self._group(sub.filter).add(sub)
        for hook in self.on_attach:
            hook(sub)

    def orchestrator_streams(self, oid: str) -> list[Subscriber]:
        """The live ``?orchestrator=oid`` streams (for frames that are not log events)."""
        return [sub for group in self._by_orchestrator.get(oid, {}).values() for sub in group]

    def detach(self, sub: Subscriber) -> None:
        """Forget ``sub``: it gets nothing more."""
        self._open.discard(sub)
        flt = sub.filter
        index, scope = self._index(flt)
        if index is None or scope is None:
            group = self._everyone.get(flt.key)
            if group is not None:
                group.discard(sub)
            return
        groups = index.get(scope)
        if groups is None:
            return
        group = groups.get(flt.key)
        if group is not None:
            group.discard(sub)
            if not group:
                del groups[flt.key]
        if not groups:
            del index[scope]

    # -- resuming --------------------------------------------------------------

    async def check_resume(self, since: int, field: str) -> None:
        """Refuse a resume position the log cannot serve, before the stream opens."""
        loop = asyncio.get_running_loop()
        assert self.replayer is not None
        reader = self.replayer.log
        if since > self.position:
            head = await loop.run_in_executor(None, reader.head)
            if since > head:
                raise ConflictError(
                    f"{field}: position {since} is after the newest position in this relay's "
                    f"log ({head}); the log you were following is not this one (reset or "
                    "restored?): reconnect without a resume position and reload"
                )
            await self._wait_for(since)  # stored, not applied yet: a moment's wait
        if since > 0:
            first = await loop.run_in_executor(None, reader.first)
            if first and since < first - 1:
                raise ConflictError(
                    f"{field}: position {since} is older than the oldest position this log "
                    f"still holds ({first}); events in between are gone: reload and follow "
                    "from now"
                )

    async def rest_of(self, position: int, part: int, field: str) -> list[Frame]:
        """The frames of ``position`` after its frame ``part`` (a ``P.K`` resume), checked
        before the stream opens: an id this log never gave out is refused (409)."""
        frames = await self._frames_at(position)
        if part >= len(frames) - 1:
            raise ConflictError(
                f"{field}: {position}.{part} is not an event id of this relay's log (position "
                f"{position} carries {len(frames)} event(s); its last is id {position}, earlier "
                f"ones {position}.0, {position}.1, ...): reconnect without a resume position "
                "and reload"
            )
        return frames[part + 1 :]

    async def _frames_at(self, position: int) -> list[Frame]:
        """Every frame of ``position``, unfiltered: from the ring, or replayed from the store."""
        if position <= 0:
            return []
        if position > self.ring.floor:  # the ring holds every position after its floor that has frames
            return self.ring.at(position)
        replayer = self.replayer
        assert replayer is not None
        async with self._replays:
            return await asyncio.get_running_loop().run_in_executor(
                None, frames_at, replayer, position
            )

    async def follow(
        self,
        sub: Subscriber,
        resp: web.StreamResponse,
        since: int | None,
        rest: list[Frame] | None = None,
    ) -> None:
        """Catch ``sub`` up from ``since`` (None: from now), then keep it live until it ends.
        ``rest``: the frames of ``since`` the client has not had yet (a ``P.K`` resume)."""
        if rest:
            payload = sub.filter.select(rest)
            if payload:
                await resp.write(payload)
        position = self.delivered if since is None else since
        rm: ReadModels | None = None
        while sub.reason is None and not self.closed:
            if position > self.delivered:
                await self._next_flush()  # applied, not yet sent to anyone: join with the next batch
                continue
            if position >= self.ring_floor:
                budget = min(SWITCH_BYTES, sub.limit // 2)
                payload, last, complete = self.ring.after(
                    position, sub.filter, budget, self.delivered
                )
                if complete and sub.fits(len(payload) + 64):
                    # The switch: no await from here to _attach, so nothing falls in between.
                    if payload:
                        sub.push(payload, chunk(payload))
                    self._attach(sub)
                    break
                if complete and (not payload or not sub.fits(0)):
                    sub.finish("overflow")  # a whole buffer behind already: as if it were live
                    break
                # Too much to hand over in one go: send it paced by the client, then look again.
                await resp.write(payload)
                position = last
                continue
            self.replayed += 1 if rm is None else 0
            async with self._replays:
                rm, payload = await self._replay_step(rm, position, sub.filter)
            if payload:
                await resp.write(payload)
            position = rm.position if rm.position > position else self.ring_floor
        if self.closed:
            sub.finish("shutdown")
        await sub.done

    async def _replay_step(
        self, rm: ReadModels | None, position: int, flt: Filter
    ) -> tuple[ReadModels, bytes]:
        """Fold the next stretch after ``position`` from the store, off the loop."""
        replayer = self.replayer
        assert replayer is not None
        stop = self.ring.floor  # beyond this the ring has it (and the store surely has it)
        return await asyncio.get_running_loop().run_in_executor(
            None, fold_stretch, replayer, rm, position, stop, flt
        )

    async def _wait_for(self, position: int) -> None:
        """Until the follower has applied ``position`` (it is in the store already)."""
        if self.position >= position:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, fut))
        if self.service.tail is not None:
            self.service.tail.poke()
        try:
            await asyncio.wait_for(fut, WAIT_FOR_FOLLOWER)
        except TimeoutError:
            raise ConflictError(
                f"position {position} is in the store but this relay has not applied it yet; retry"
            ) from None

    def _wake(self) -> None:
        still = []
        for position, fut in self._waiters:
            if position <= self.position:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((position, fut))
        self._waiters = still

    def stats(self) -> dict[str, int]:
        """Counters for health and the benchmarks."""
        return {
            "open": len(self._open),
            "opened": self.opened,
            "cut": self.cut,
            "replayed": self.replayed,
            "ringFloor": self.ring_floor,
        }


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("could not save a replay anchor: %s", fut.exception())


