"""Live terminal output, only while someone watches (issue 16, ADR 0031).

A host is never reachable from the relay, and most of the time nobody looks
at an agent's terminal, so output flows only on demand::

    viewer ── GET /api/orchestrators/{id}/agents/{agentId}/output ──▶ relay   (SSE, aiohttp-sse)
    relay  ── orchestrator.watch frame on the host's own event stream ──▶ host
    host   ── POST /api/orchestrators/{id}/output {"chunks": [...]} ──▶ relay ──▶ viewers

- A **feed** exists while an agent has at least one viewer. When a host's set of
  fed agents changes (0→1, 1→0), and whenever its event stream goes live
  again, the relay writes one ``orchestrator.watch`` frame on that stream: the
  whole set, the agents that need a fresh screen (``refresh``) and the push
  limits. The frame has no ``id``: it is not a log event and is never replayed.
- The host answers with a **snapshot** of the pane (recent history, screen,
  cursor) and then raw **output** chunks, ANSI escapes kept. The relay keeps
  the last snapshot and the output after it, bounded (``--output-buffer``), so
  a second viewer starts at once; past the bound it forgets them and asks the
  host for a fresh snapshot when someone next joins.
- Each viewer has its own queue. A push never waits for a viewer: a viewer
  whose queue passes ``--output-buffer + --output-push-max`` bytes is cut
  (its connection closed; EventSource reconnects and starts from a snapshot),
  and the others go on.
- Nothing here touches the log: output is large and may hold secrets.

Limits: viewers per agent and per host (429 before the stream opens), push
size (413), pushes and bytes per second per host (429 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from relay.config import Settings
from relay.domain.errors import InvalidInputError, RelayError, TooLargeError
from relay.domain.rules import check_id
from relay.http import parse
from relay.http.errors import error_response
from relay.http.keys import HUB, OUTPUT, SERVICE, SETTINGS
from relay.http.sse import Subscriber, chunk
from relay.projections.queries import Queries
from relay.service import RelayService
from relay.wire import shapes as w
from relay.wire.declare import decode

log = logging.getLogger(__name__)

WATCH_EVENT = "orchestrator.watch"
RETRY_MS = 1_000
TICK = 1.0  # seconds between looks for departed viewers and agents that are gone
SEND_TIMEOUT = 30.0  # a write a viewer does not take within this long ends its stream
HOST_SHARE = 0.9  # hosts are told 90% of the limits, so pacing never meets a 429


class TooManyError(RelayError):
    """Raised when a viewer or a push is over a limit; worth retrying later (429)."""

    status = 429

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- viewers and feeds ---------------------------------------------------------------


class Viewer:
    """One open output stream: a bounded queue of (event, data) its handler drains."""

    __slots__ = ("aid", "limit", "oid", "queue", "queued", "reason", "transport", "waiting", "wake")

    def __init__(self, oid: str, aid: str, transport: Any, limit: int) -> None:
        self.oid = oid
        self.aid = aid
        self.transport = transport
        self.limit = limit
        self.queue: deque[tuple[str, str, int]] = deque()
        self.queued = 0
        self.waiting = True  # for a snapshot: output before one means nothing to a new terminal
        self.reason: str | None = None
        self.wake = asyncio.Event()

    def offer(self, event: str, data: str, size: int) -> None:
        """Queue one event, or cut the viewer if that would put it over its limit."""
        if self.reason is not None:
            return
        if self.queued + size > self.limit:
            self.end("overflow")
            return
        self.queue.append((event, data, size))
        self.queued += size
        self.wake.set()

    def take(self) -> list[tuple[str, str, int]]:
        """Everything queued, oldest first."""
        items = list(self.queue)
        self.queue.clear()
        self.queued = 0
        self.wake.clear()
        return items

    def end(self, reason: str) -> None:
        """Stop this stream; a viewer that stopped reading is disconnected at once."""
        if self.reason is not None:
            return
        self.reason = reason
        self.wake.set()
        if reason == "overflow" and self.transport is not None:
            # Its handler may be stuck in a write the client never takes.
            self.transport.abort()


class Feed:
    """An agent someone watches: its viewers, and its last snapshot with the output since."""

    __slots__ = ("aid", "asked", "oid", "size", "snapshot", "tail", "viewers")

    def __init__(self, oid: str, aid: str) -> None:
        self.oid = oid
        self.aid = aid
        self.viewers: set[Viewer] = set()
        self.snapshot: tuple[str, int] | None = None  # (data, bytes): None means stale
        self.tail: list[tuple[str, int]] = []
        self.size = 0
        self.asked = False  # a fresh snapshot was asked for and has not come yet

    def forget(self) -> None:
        self.snapshot = None
        self.tail = []
        self.size = 0


class Bucket:
    """A token bucket: ``rate`` per second, holding at most one second's worth."""

    __slots__ = ("at", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = now

    def wait_for(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens are there (0: they are)."""
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate


# -- the hub -------------------------------------------------------------------------


class OutputHub:
    """Feeds, viewers and push limits of this relay process."""

    def __init__(self, service: RelayService, settings: Settings, events: Any) -> None:
        self.service = service
        self.settings = settings
        self.events = events  # relay.http.sse.EventHub: the hosts' streams
        self.feeds: dict[str, dict[str, Feed]] = {}  # orchestrator id -> agent id -> feed
        self.viewers_of_host: dict[str, int] = {}
        self.buckets: dict[str, tuple[Bucket, Bucket]] = {}  # per host: pushes, bytes
        self.viewer_limit = settings.output_buffer + settings.output_push_limit
        self.limits = {
            "pushesPerSecond": settings.output_pushes * HOST_SHARE,
            "bytesPerSecond": int(settings.output_rate * HOST_SHARE),
            "pushBytes": int(settings.output_push_limit * HOST_SHARE),
        }
        self.closed = False
        self._ticker: asyncio.Task[None] | None = None
        self.counts = {
            "viewers": 0, "cut": 0, "pushes": 0, "pushBytes": 0, "chunks": 0, "unwatched": 0,
            "frames": 0,
        }

    # -- viewers ---------------------------------------------------------------

    def join(self, oid: str, aid: str, transport: Any) -> Viewer:
        """A new viewer of ``aid`` (already checked to exist); 429 past the limits."""
        if self.closed:
            raise web.HTTPServiceUnavailable(text="the relay is shutting down")
        feeds = self.feeds.setdefault(oid, {})
        feed = feeds.get(aid)
        if feed is not None and len(feed.viewers) >= self.settings.output_viewers:
            raise TooManyError(
                f"agent {aid!r} has {len(feed.viewers)} output viewers already "
                f"(--output-viewers {self.settings.output_viewers}); close one or retry later",
                5,
            )
        if self.viewers_of_host.get(oid, 0) >= self.settings.output_host_viewers:
            if not feeds:
                del self.feeds[oid]
            raise TooManyError(
                f"orchestrator {oid!r} has {self.viewers_of_host[oid]} output viewers already "
                f"(--output-host-viewers {self.settings.output_host_viewers}); retry later",
                5,
            )
        new = feed is None
        if feed is None:
            feed = feeds[aid] = Feed(oid, aid)
        viewer = Viewer(oid, aid, transport, self.viewer_limit)
        feed.viewers.add(viewer)
        self.viewers_of_host[oid] = self.viewers_of_host.get(oid, 0) + 1
        self.counts["viewers"] += 1
        if feed.snapshot is not None:
            viewer.waiting = False
            viewer.offer("snapshot", *feed.snapshot)
            for data, size in feed.tail:
                viewer.offer("output", data, size)
        elif new or not feed.asked:
            feed.asked = True
            self.tell_host(oid, (aid,))
        return viewer

    def leave(self, viewer: Viewer) -> None:
        """Forget ``viewer``; the host hears when its agent has no viewer left."""
        viewer.end("gone")
        feeds = self.feeds.get(viewer.oid)
        feed = feeds.get(viewer.aid) if feeds else None
        if feed is None or viewer not in feed.viewers:
            return
        feed.viewers.discard(viewer)
        left = self.viewers_of_host.get(viewer.oid, 0) - 1
        if left > 0:
            self.viewers_of_host[viewer.oid] = left
        else:
            self.viewers_of_host.pop(viewer.oid, None)
        if not feed.viewers:
            assert feeds is not None
            del feeds[viewer.aid]
            if not feeds:
                del self.feeds[viewer.oid]
            self.tell_host(viewer.oid, ())

    # -- the host's side -------------------------------------------------------

    def frame(self, oid: str, refresh: tuple[str, ...] | list[str]) -> bytes:
        """The ``orchestrator.watch`` frame for ``oid``: no id, it is not in the log."""
        data = {
            "orchestratorId": oid,
            "agents": sorted(self.feeds.get(oid, {})),
            "refresh": sorted(refresh),
            "limits": self.limits,
        }
        return b"event: " + WATCH_EVENT.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def tell_host(self, oid: str, refresh: tuple[str, ...]) -> None:
        """Write the current watch set to every live stream of ``oid`` (its host's)."""
        streams = [s for s in self.events.orchestrator_streams(oid) if _wants_frames(s)]
        if not streams:
            return
        payload = self.frame(oid, refresh)
        framed = chunk(payload)
        for sub in streams:
            sub.push(payload, framed)
        self.counts["frames"] += len(streams)

    def on_stream_live(self, sub: Subscriber) -> None:
        """EventHub hook: a host's stream (re)joined the live tail; tell it what is watched.

        Sent even when nothing is: a host that pushed for viewers before a
        relay restart or a lost connection stops at once."""
        oid = sub.filter.orchestrator
        if oid is None or not _wants_frames(sub):
            return
        feeds = self.feeds.get(oid, {})
        refresh = [aid for aid, f in feeds.items() if any(v.waiting for v in f.viewers)]
        for aid in refresh:
            feeds[aid].asked = True
        payload = self.frame(oid, refresh)
        sub.push(payload, chunk(payload))
        self.counts["frames"] += 1

    def admit(self, oid: str, size: int, now: float) -> None:
        """Count one push of ``size`` bytes against ``oid``'s rates, or refuse it (429)."""
        pushes, volume = self.buckets.get(oid) or self.buckets.setdefault(
            oid, (Bucket(self.settings.output_pushes, now), Bucket(self.settings.output_rate, now))
        )
        wait = max(pushes.wait_for(1, now), volume.wait_for(size, now))
        if wait > 0:
            raise TooManyError(
                f"orchestrator {oid!r} is pushing output faster than this relay takes "
                f"(--output-pushes {self.settings.output_pushes}/s, --output-rate "
                f"{self.settings.output_rate} bytes/s); slow down",
                wait,
            )
        pushes.tokens -= 1
        volume.tokens -= size

    def deliver(self, oid: str, items: list[w.OutputChunk]) -> tuple[int, list[str]]:
        """Hand a push's chunks to the viewers of their agents, never waiting for one.

        Returns how many chunks had a viewer, and the agents that have none."""
        feeds = self.feeds.get(oid, {})
        delivered = 0
        unwatched: list[str] = []
        for item in items:
            aid = item.agent_id
            feed = feeds.get(aid)
            if feed is None:
                if aid not in unwatched:
                    unwatched.append(aid)
                continue
            delivered += 1
            raw = orjson.dumps(item.wire())  # once, for every viewer and the buffer
            if item.kind == "snapshot":
                self._snapshot(feed, raw.decode(), len(raw), bool(item.reset))
            else:
                self._output(feed, raw.decode(), len(raw))
        self.counts["chunks"] += delivered
        self.counts["unwatched"] += len(items) - delivered
        return delivered, unwatched

    def _snapshot(self, feed: Feed, data: str, size: int, reset: bool) -> None:
        feed.asked = False
        feed.forget()
        if size <= self.settings.output_buffer:
            feed.snapshot = (data, size)
            feed.size = size
        for viewer in list(feed.viewers):
            if viewer.waiting or reset:
                viewer.waiting = False
                viewer.offer("snapshot", data, size)

    def _output(self, feed: Feed, data: str, size: int) -> None:
        if feed.snapshot is not None:
            feed.tail.append((data, size))
            feed.size += size
            if feed.size > self.settings.output_buffer:
                feed.forget()  # the next viewer to join asks the host for a fresh screen
        for viewer in list(feed.viewers):
            if not viewer.waiting:
                viewer.offer("output", data, size)

    # -- lifetime ----------------------------------------------------------------

    def start(self) -> None:
        self.events.on_attach.append(self.on_stream_live)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def close(self) -> None:
        """End every viewer's stream (clean shutdown)."""
        self.closed = True
        for feeds in list(self.feeds.values()):
            for feed in list(feeds.values()):
                for viewer in list(feed.viewers):
                    viewer.end("the relay is shutting down")
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def _tick(self) -> None:
        """Once a second: notice departed viewers (aiohttp does not tell a handler
        its client left) and end the streams of agents that are no longer managed."""
        while True:
            await asyncio.sleep(TICK)
            q = Queries(self.service.rm)
            for oid, feeds in list(self.feeds.items()):
                managed = q.managed_agent_ids(oid)
                for aid, feed in list(feeds.items()):
                    gone = aid not in managed
                    for viewer in list(feed.viewers):
                        t = viewer.transport
                        if t is None or t.is_closing():
                            viewer.end("gone")
                        elif gone:
                            viewer.end(f"agent {aid!r} is no longer managed by orchestrator {oid!r}")

    def stats(self) -> dict[str, int]:
        """Counters for tests and benchmarks."""
        open_ = sum(len(f.viewers) for feeds in self.feeds.values() for f in feeds.values())
        return {**self.counts, "open": open_, "feeds": sum(len(f) for f in self.feeds.values())}


def _wants_frames(sub: Subscriber) -> bool:
    families = sub.filter.families
    return families is None or "orchestrator" in families


# -- handlers ------------------------------------------------------------------------


def _managed(s: RelayService, oid: str, aid: str) -> None:
    Queries(s.rm).require_managed(oid, aid)


def _too_many(e: TooManyError) -> web.Response:
    return error_response(429, e.message, {"Retry-After": str(max(1, math.ceil(e.retry_after)))})


async def watch(request: web.Request) -> web.StreamResponse:
    """``GET /api/orchestrators/{id}/agents/{agentId}/output``: one viewer's stream."""
    oid = check_id("id", request.match_info["id"])
    aid = check_id("agentId", request.match_info["agentId"])
    _managed(request.app[SERVICE], oid, aid)
    hub = request.app[OUTPUT]
    try:
        viewer = hub.join(oid, aid, request.transport)
    except TooManyError as e:
        return _too_many(e)
    _bound_send_buffer(request.transport, hub.viewer_limit)
    resp = EventSourceResponse(ping_interval=request.app[SETTINGS].keepalive, send_timeout=SEND_TIMEOUT)
    try:
        await resp.prepare(request)
        await resp.write(b"retry: %d\r\n\r\n" % RETRY_MS)
        while viewer.reason is None:
            await viewer.wake.wait()
            for event, data, _ in viewer.take():
                await resp.send(data, event=event)
        if viewer.reason not in ("gone", "overflow"):
            await resp.send(orjson.dumps({"reason": viewer.reason}).decode(), event="end")
    except (ConnectionError, RuntimeError, TimeoutError):
        viewer.end("gone")
    finally:
        if viewer.reason == "overflow":
            hub.counts["cut"] += 1
            log.info("cut an output viewer of %s/%s that fell behind", oid, aid)
        hub.leave(viewer)
    if resp.prepared:
        resp.stop_streaming()
        try:
            async with asyncio.timeout(1.0):
                await resp.write_eof()
        except (ConnectionError, RuntimeError, TimeoutError):
            if request.transport is not None:
                request.transport.abort()  # it stopped reading: no more waiting on it
    return resp


def _too_large(most: int) -> str:
    return (
        f"an output push is over the limit of {most} bytes (--output-push-max, within "
        "--max-body and --output-rate); send less at a time"
    )


def _bound_send_buffer(transport: Any, size: int) -> None:
    """Cap the kernel's send buffer of a viewer's socket at the viewer's own limit.

    Linux grows a socket's send buffer up to 4 MiB on its own, so a viewer that
    stopped reading would hold megabytes of output before its queue here even
    starts to fill; bounded, it is noticed (and cut) after about twice its
    limit, and a relay with hundreds of viewers keeps its kernel memory in check.
    Output rates are far below what even a capped buffer carries."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def push(request: web.Request) -> web.Response:
    """``POST /api/orchestrators/{id}/output``: a host's chunks for its watched agents."""
    oid = check_id("id", request.match_info["id"])
    s = request.app[SERVICE]
    settings = request.app[SETTINGS]
    Queries(s.rm).orchestrator(oid)  # NotFoundError for an unknown host
    most = settings.output_push_limit
    if request.content_length is not None and request.content_length > most:
        raise TooLargeError(_too_large(most))
    raw = await parse.read_body(request)
    size = len(raw)
    if size > most:
        raise TooLargeError(_too_large(most))
    if not raw:
        raise InvalidInputError("body", "a JSON object is required")
    items = decode(raw, w.OutputPush).chunks
    hub = request.app[OUTPUT]
    try:
        hub.admit(oid, size, asyncio.get_running_loop().time())
    except TooManyError as e:
        return _too_many(e)
    delivered, unwatched = hub.deliver(oid, items)
    hub.counts["pushes"] += 1
    hub.counts["pushBytes"] += size
    return web.Response(
        body=orjson.dumps({"ok": True, "delivered": delivered, "unwatched": unwatched}),
        content_type="application/json",
    )


# -- wiring --------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the output routes and hub to ``app`` (after ``sse.setup``: it uses the hosts' streams)."""
    app[OUTPUT] = OutputHub(app[SERVICE], app[SETTINGS], app[HUB])
    app.router.add_get(
        "/api/orchestrators/{id}/agents/{agentId}/output", watch, allow_head=False
    )
    app.router.add_post("/api/orchestrators/{id}/output", push)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_close)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    app[OUTPUT].start()
    yield
    await app[OUTPUT].close()


async def _close(app: web.Application) -> None:
    await app[OUTPUT].close()
