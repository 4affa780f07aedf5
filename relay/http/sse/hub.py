"""``GET /api/events``: the log's tail as Server-Sent Events, encoded once, fanned out.

One ``EventHub`` per process listens to the tail follower. For each applied
event it encodes the changes (``ReadModels.apply`` says what changed) to their
wire bytes once and keeps them in a ring of recent positions; a moment later
(after the writes that event answers, one batch per loop turn) it writes the
same bytes to every matching subscriber's transport. Nothing is formatted,
queued or polled per subscriber: the transport's write buffer *is* the
subscriber's bounded buffer, and a subscriber whose buffer would pass
``sse_buffer`` bytes is ended (it resumes with ``Last-Event-ID`` and loses
nothing).

Resuming (``Last-Event-ID``, or ``?since=``) never has a seam between the past
and the live part because the switch happens in one synchronous step on the
loop: copy the ring's frames after the client's position up to what has been
delivered, then join the live set, with no ``await`` in between, so nothing
can be delivered in the middle.
A position older than the ring is first replayed from the store: the read
models as of that position (``relay.audit.replay``) folded forward with the
same ``ReadModels.apply``, so a past event carries its entity *as of that
event*, byte for byte what a live subscriber got then (ADR 0007).

Each position's frames travel in one write: a stream the relay ends is ended
between positions, never inside one (a position can carry two events: an
orchestrator and its own agent record). A client can still stop reading
between them, so every frame has its own id: ``P`` for a position's last,
``P.K`` for the earlier ones (K counted over all of P's frames, so a filter
never changes an id), and ``Last-Event-ID: P.K`` resumes with the frame after it.

Authorization (tokens, ``?orchestrator=`` for orchestrator tokens, stream
limits) is the auth middleware's; this module only parses and serves.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion11

from relay.audit.log import READ_CHUNK, AppLog
from relay.audit.replay import Replayer, load_anchors, save_anchor
from relay.config import Settings
from relay.domain.errors import ConflictError, InvalidInputError
from relay.domain.rules import check_id
from relay.http.keys import HUB, SERVICE, SETTINGS
from relay.http.past import PastModels
from relay.projections.readmodels import Change, ReadModels
from relay.service import RelayService

log = logging.getLogger(__name__)

FAMILIES = frozenset({"agent", "orchestrator", "message", "system"})  # the part of an event name before "."
RETRY_MS = 1_000
KEEPALIVE = b": keep-alive\n\n"
RING_BYTES = 32 * 1024 * 1024
SWITCH_BYTES = 256 * 1024  # at most this much is written in the no-await switch to live
CATCHUP_EVENTS = 2_000  # events folded per step of a replay from the store
MAX_REPLAYS = 2  # resumes replaying from the store at once; more wait their turn
CUT_GRACE = 5.0  # seconds an ended stream gets to take what it was sent
WAIT_FOR_FOLLOWER = 10.0
TCP_USER_TIMEOUT_MS = 120_000



class Frame(NamedTuple):
    """One change's wire bytes, tagged with what filters look at."""

    family: str
    orchestrator: str | None  # the orchestrator it is about (orchestrator.* only)
    agents: tuple[str, ...]  # the agents it concerns (agent.*: itself; message.*: both ends)
    data: bytes


# -- encoding ---------------------------------------------------------------------


def encode(position: int, changes: list[Change]) -> list[Frame]:
    """Each change as its SSE bytes, tagged for filtering; the data is encoded now,
    because the dicts are the live read models and will change under us.

    Ids are unique and increase (ADR 0007, amended): the position's last frame
    is ``P``, earlier ones ``P.K`` with K the frame's index among all of the
    position's frames, so a filter changes which frames a client sees, never
    their ids."""
    frames: list[Frame] = []
    last = len(changes) - 1
    for k, (name, data) in enumerate(changes):
        family, _, what = name.partition(".")
        oid: str | None = None
        agents: tuple[str, ...] = ()
        if family == "orchestrator":
            # A command and an agent's attention name their orchestrator; the rest are it.
            oid = data.get("orchestratorId") if what in ("command", "attention") else data.get("id")
        elif family == "agent":
            agents = (data["id"],)
        elif family == "message":
            agents = tuple(a for a in (data.get("recipient"), data.get("from")) if a)
        head = b"id: %d\nevent: " % position if k == last else b"id: %d.%d\nevent: " % (position, k)
        wire = head + name.encode() + b"\ndata: " + _data_bytes(name, data) + b"\n\n"
        frames.append(Frame(family, oid, agents, wire))
    return frames


def _data_bytes(name: str, data: dict[str, Any]) -> bytes:
    """``data`` as JSON; a record orjson cannot write (ADR 0011) becomes a placeholder
    naming it, so the position still reaches every stream instead of being skipped."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as e:
        log.warning("an SSE frame (%s) cannot be encoded (%s); sent as a placeholder", name, e)
        return orjson.dumps({"id": str(data.get("id")), "error": f"cannot be shown as JSON: {e}"})


def state_blob(rm: ReadModels) -> bytes | None:
    """The read models as a replay anchor, or None (logged) when they cannot be encoded:
    a missing anchor only makes a replay fold from an earlier one, never stops the relay."""
    try:
        return orjson.dumps(rm.to_state())
    except orjson.JSONEncodeError:
        log.warning("the read models cannot be encoded; skipping this replay anchor", exc_info=True)
        return None


class Filter:
    """What one subscriber asked for: families (``?types=``), and one orchestrator
    (its status and commands) or one agent (its record and its messages)."""

    __slots__ = ("agent", "families", "key", "orchestrator")

    def __init__(
        self,
        families: frozenset[str] | None = None,
        orchestrator: str | None = None,
        agent: str | None = None,
    ) -> None:
        self.families = families  # None: every family
        self.orchestrator = orchestrator
        self.agent = agent
        self.key = (families, orchestrator, agent)

    def accepts(self, f: Frame) -> bool:
        if self.families is not None and f.family not in self.families:
            return False
        if self.orchestrator is not None:
            return f.family == "orchestrator" and f.orchestrator == self.orchestrator
        return self.agent is None or self.agent in f.agents

    def select(self, frames: list[Frame]) -> bytes:
        """The bytes of ``frames`` this filter lets through (b"" for none)."""
        if self.families is None and self.orchestrator is None and self.agent is None:
            return b"".join(f.data for f in frames)
        return b"".join(f.data for f in frames if self.accepts(f))


def chunk(payload: bytes) -> bytes:
    """``payload`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


# -- subscribers -------------------------------------------------------------------


class Subscriber:
    """One open stream: its transport, its filter and why it ended (if it has)."""

    __slots__ = ("chunked", "done", "filter", "limit", "reason", "transport")

    def __init__(self, transport: Any, flt: Filter, limit: int, chunked: bool) -> None:
        self.transport = transport
        self.filter = flt
        self.limit = limit
        self.chunked = chunked
        self.reason: str | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def push(self, payload: bytes, framed: bytes) -> None:
        """Write one whole position (or a comment) now, or end the stream if it cannot keep up."""
        if self.reason is not None:
            return
        t = self.transport
        if t is None or t.is_closing():
            self.finish("gone")
            return
        data = framed if self.chunked else payload
        if t.get_write_buffer_size() + len(data) > self.limit:
            self.finish("overflow")
            return
        t.write(data)

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes stay within this stream's buffer."""
        t = self.transport
        return t is not None and t.get_write_buffer_size() + size <= self.limit

    def finish(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if not self.done.done():
                self.done.set_result(reason)


# -- the hub -----------------------------------------------------------------------


class EventHub:
    """Encodes each applied event once and writes it to every subscriber that wants it."""

    def __init__(self, service: RelayService, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.position = 0
        # The ring: recent positions that produced frames, oldest first. Every
        # position in (ring_floor, position] with frames is in it.
        self._ring_pos: list[int] = []
        self._ring_frames: list[list[Frame]] = []
        self._ring_start = 0
        self._ring_bytes = 0
        self.ring_floor = 0
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
        self.position = self.ring_floor = self.delivered = s.rm.position
        # Folds read thinned runs as their ends (relay.store.reader.FoldingReader).
        log_ = s.reader.folding() if s.reader is not None else AppLog(s.app)
        self.replayer = Replayer(log_, every=self.settings.replay_every)
        self._past = PastModels(self.replayer)
        self._anchor_bucket = self.position // self.replayer.every
        blob = state_blob(s.rm) if self.position else None
        if blob is not None:
            self.replayer.add_anchor(self.position, blob)
        s.tail.listeners.append(self.on_applied)
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())

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
            self._remember(position, frames)
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

    def _remember(self, position: int, frames: list[Frame]) -> None:
        self._ring_pos.append(position)
        self._ring_frames.append(frames)
        self._ring_bytes += sum(len(f.data) for f in frames)
        while (
            (
                len(self._ring_pos) - self._ring_start > self.settings.sse_ring
                or self._ring_bytes > RING_BYTES
            )
            and len(self._ring_pos) - self._ring_start > 1
            and self._ring_pos[self._ring_start] <= self.delivered  # never what is still pending
        ):
            i = self._ring_start
            self.ring_floor = self._ring_pos[i]
            self._ring_bytes -= sum(len(f.data) for f in self._ring_frames[i])
            self._ring_frames[i] = []
            self._ring_start += 1
        if self._ring_start > 4096 and self._ring_start * 2 > len(self._ring_pos):
            del self._ring_pos[: self._ring_start]
            del self._ring_frames[: self._ring_start]
            self._ring_start = 0

    def _ring_after(self, position: int, flt: Filter, budget: int) -> tuple[bytes, int, bool]:
        """Ring frames after ``position`` for ``flt``, up to what has been delivered:
        (bytes up to ``budget``, last position included, whether that reached it)."""
        i = bisect.bisect_right(self._ring_pos, position, lo=self._ring_start)
        parts: list[bytes] = []
        size = 0
        last = position
        n = bisect.bisect_right(self._ring_pos, self.delivered, lo=i)
        while i < n:
            payload = flt.select(self._ring_frames[i])
            if payload:
                if parts and size + len(payload) > budget:
                    return b"".join(parts), last, False
                parts.append(payload)
                size += len(payload)
            last = self._ring_pos[i]
            i += 1
        return b"".join(parts), self.delivered, True

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
        if position > self.ring_floor:  # the ring holds every position after its floor that has frames
            i = bisect.bisect_left(self._ring_pos, position, lo=self._ring_start)
            found = i < len(self._ring_pos) and self._ring_pos[i] == position
            return list(self._ring_frames[i]) if found else []
        replayer = self.replayer
        assert replayer is not None

        def replay() -> list[Frame]:
            state = replayer.state_at(position - 1)
            batch = replayer.log.select(position - 1, 1, position)
            if not batch or batch[0].id != position:
                return []
            return encode(position, state.apply(position, replayer.log.decode(batch[0]), emit=True))

        async with self._replays:
            return await asyncio.get_running_loop().run_in_executor(None, replay)

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
                payload, last, complete = self._ring_after(position, sub.filter, budget)
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
        stop = self.ring_floor  # beyond this the ring has it (and the store surely has it)
        loop = asyncio.get_running_loop()

        def step() -> tuple[ReadModels, bytes]:
            state = rm if rm is not None else replayer.state_at(position)
            parts: list[bytes] = []
            decode = replayer.log.decode
            folded = 0
            while state.position < stop and folded < CATCHUP_EVENTS:
                batch = replayer.log.select(state.position, min(READ_CHUNK, CATCHUP_EVENTS), stop)
                if not batch:
                    state.position = stop  # nothing stored up to the floor: all of it is behind us
                    break
                for n in batch:
                    changes = state.apply(n.id, decode(n), emit=True)
                    if changes:
                        payload = flt.select(encode(n.id, changes))
                        if payload:
                            parts.append(payload)
                folded += len(batch)
            return state, b"".join(parts)

        return await loop.run_in_executor(None, step)

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

    # -- keep-alive --------------------------------------------------------------

    async def _keep_alive(self) -> None:
        """Comments every ``keepalive`` seconds; departed clients noticed within a second.

        aiohttp does not tell a handler that its client left (the handler is not
        cancelled), so an idle stream would linger until its next write: look at
        every transport once a second instead, which costs nothing per event.
        """
        framed = chunk(KEEPALIVE)
        every = self.settings.keepalive
        tick = min(every, 1.0)
        loop = asyncio.get_running_loop()
        next_comment = loop.time() + every
        while True:
            await asyncio.sleep(tick)
            comment = loop.time() >= next_comment
            if comment:
                next_comment += every
            for sub in list(self._open):
                t = sub.transport
                if t is None or t.is_closing():
                    sub.finish("gone")
                elif comment:
                    sub.push(KEEPALIVE, framed)

    def stats(self) -> dict[str, int]:
        """Counters for health and the benchmarks."""
        return {
            "open": len(self._open),
            "opened": self.opened,
            "cut": self.cut,
            "replayed": self.replayed,
            "ringFloor": self.ring_floor,
        }


# -- the handler -------------------------------------------------------------------


def parse_event_id(raw: str, field: str) -> tuple[int, int | None]:
    """An event id as the relay writes it: ``P`` (all of position P delivered) or
    ``P.K`` (P's frames up to its K-th delivered)."""
    m = _EVENT_ID.fullmatch(raw.strip())
    if m is None:
        raise InvalidInputError(
            field,
            f"must be an event id this relay sent (a log position P, or P.K), not {raw[:40]!r}",
        )
    return int(m[1]), (int(m[2]) if m[2] is not None else None)


_EVENT_ID = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,9}))?", re.ASCII)


def parse_stream(request: web.Request) -> tuple[Filter, int | None, int | None, str]:
    """The stream's filter and resume point (the header wins over ``?since=``): a
    position, and the index of the last frame of it delivered (None: all of it)."""
    q = request.query
    raw_types = q.get("types")
    families: frozenset[str] | None = None
    if raw_types:
        families = frozenset(t.strip() for t in raw_types.split(",") if t.strip())
        if not families or families - FAMILIES:
            raise InvalidInputError(
                "types",
                f"must be a comma-separated list of {', '.join(sorted(FAMILIES))}; got {raw_types!r}",
            )
    oid = q.get("orchestrator")
    if oid is not None:
        oid = check_id("orchestrator", oid)
    aid = q.get("agent")
    if aid is not None:
        aid = check_id("agent", aid)
        if oid is not None:
            raise InvalidInputError("agent", "give either ?agent= or ?orchestrator=, not both")
    field = "Last-Event-ID"
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        field, raw = "since", q.get("since")
    since: int | None = None
    part: int | None = None
    if raw is not None and raw.strip():
        since, part = parse_event_id(raw, field)
    return Filter(families, oid, aid), since, part, field


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/events``."""
    hub = request.app[HUB]
    settings = request.app[SETTINGS]
    flt, since, part, field = parse_stream(request)
    if hub.closed:
        raise web.HTTPServiceUnavailable(text="the relay is shutting down")
    rest: list[Frame] | None = None
    if since is not None:
        await hub.check_resume(since, field)
        if part is not None:
            rest = await hub.rest_of(since, part, field)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "Connection": "keep-alive",
        }
    )
    chunked = request.version >= HttpVersion11
    if chunked:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    transport = request.transport
    _set_user_timeout(transport)
    sub = Subscriber(transport, flt, settings.sse_buffer, chunked)
    hub.opening(sub)
    try:
        await resp.write(b"retry: %d\n\n" % RETRY_MS)
        await hub.follow(sub, resp, since, rest)
    except (ConnectionError, RuntimeError):
        sub.finish("gone")  # the client left during the catch-up
    except Exception:
        # The store failed during a replay: end the stream cleanly; the client resumes.
        log.exception("an event stream's catch-up failed")
        sub.finish("error")
    finally:
        hub.detach(sub)
    if sub.reason == "overflow":
        hub.cut += 1
        log.info("ended an event stream that fell %d bytes behind", settings.sse_buffer)
    await _end(sub, resp, transport)
    return resp


async def _end(sub: Subscriber, resp: web.StreamResponse, transport: Any) -> None:
    """Finish the response so the client sees a clean end and reconnects."""
    resp.force_close()
    if sub.reason == "gone" or transport is None or transport.is_closing():
        return
    grace = CUT_GRACE if sub.reason == "overflow" else 1.0
    try:
        async with asyncio.timeout(grace):
            await resp.write_eof()
    except (TimeoutError, ConnectionError, RuntimeError):
        transport.abort()  # it stopped reading: no more waiting on it


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("could not save a replay anchor: %s", fut.exception())


def _set_user_timeout(transport: Any) -> None:
    """Let the kernel drop a peer that stops acknowledging (Linux), as aiohttp-sse does."""
    opt = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if opt is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, opt, TCP_USER_TIMEOUT_MS)


# -- wiring ------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the stream to ``app`` (after the service's own lifetime is registered):
    the route, the hub, and clean shutdown."""
    app[HUB] = EventHub(app[SERVICE], app[SETTINGS])
    app.router.add_get("/api/events", stream)
    app.cleanup_ctx.append(_hub_lifetime)
    app.on_shutdown.append(_close_streams)


async def _hub_lifetime(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    hub.start()  # the service started in the cleanup context registered before this one
    await hub.load_anchors()
    yield
    await hub.close()


async def _close_streams(app: web.Application) -> None:
    await app[HUB].close()
