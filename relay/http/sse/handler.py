"""``GET /api/events``: parse the stream's filter and resume point, serve it, end it cleanly.

Authorization (tokens, ``?orchestrator=`` for orchestrator tokens, stream
limits) is the auth middleware's; this module only parses and serves. The
fan-out, the ring and resuming are the hub's (``relay.http.sse.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11

from relay.domain.errors import InvalidInputError
from relay.domain.rules import check_id
from relay.http.keys import HUB, SERVICE, SETTINGS
from relay.http.sse.encoding import RETRY_MS, Frame, parse_event_id
from relay.http.sse.filter import Filter, families_of
from relay.http.sse.hub import EventHub
from relay.http.sse.subscriber import Subscriber

log = logging.getLogger("relay.http.sse")

CUT_GRACE = 5.0  # seconds an ended stream gets to take what it was sent
TCP_USER_TIMEOUT_MS = 120_000


def parse_stream(request: web.Request) -> tuple[Filter, int | None, int | None, str]:
    """The stream's filter and resume point (the header wins over ``?since=``): a
    position, and the index of the last frame of it delivered (None: all of it)."""
    q = request.query
    families = families_of(q.get("types"))
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
