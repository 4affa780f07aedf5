"""The aiohttp application factory."""

from __future__ import annotations

import gc
import importlib.resources
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from relay.config import Settings
from relay.http import messaging, metrics, openapi, output, sse
from relay.http.auth import auth_middleware
from relay.http.errors import RelayRunner, allowed_methods, error_middleware
from relay.http.guard import guard_middleware, security_headers
from relay.http.keys import ALLOWED_METHODS, SERVICE, SETTINGS
from relay.http.routes import routes
from relay.service import RelayService

STATIC_DIR = Path(str(importlib.resources.files("relay.http") / "static"))


def create_app(settings: Settings, service: RelayService | None = None) -> web.Application:
    """The relay's web application; starts and stops the service with it."""
    app = web.Application(
        middlewares=[error_middleware, guard_middleware(settings), auth_middleware(settings)],
        client_max_size=settings.max_body,
    )
    app[SETTINGS] = settings
    app[SERVICE] = service or RelayService(settings)
    app.router.add_routes(routes)
    app.router.add_routes(messaging.routes)
    document = openapi.document()
    app[ALLOWED_METHODS] = allowed_methods(document)
    doc = orjson.dumps(document)

    async def openapi_json(_: web.Request) -> web.Response:
        return web.Response(body=doc, content_type="application/json")

    async def index(_: web.Request) -> web.StreamResponse:
        page = STATIC_DIR / "index.html"
        if not page.exists():
            return web.Response(
                text="relay is running; the dashboard is not installed.",
                content_type="text/plain",
            )
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name:.+}", _static_handler(STATIC_DIR))
    app.on_response_prepare.append(_revalidate_static)
    app.on_response_prepare.append(security_headers)
    metrics.install(app, app[SERVICE].metrics, settings)
    app.cleanup_ctx.append(_service_lifetime)
    sse.setup(app)  # after the service: the hub starts after it and stops before it
    output.setup(app)  # after the event hub: it writes watch frames on the hosts' streams
    return app


def _static_handler(folder: Path) -> Any:
    """Serve the dashboard's files: only those present at start, never via a symlink.

    The names are listed once, so no request path is ever joined onto a
    folder (no traversal to reason about), and a name that is not there is the
    contract's JSON 404 (aiohttp's static route answers an empty one).
    """
    files = {
        p.relative_to(folder).as_posix(): p
        for p in (folder.rglob("*") if folder.is_dir() else ())
        if p.is_file() and not p.is_symlink()
    }

    async def static(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    return static


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner ``relay serve`` uses: JSON answers even for requests aiohttp cannot parse."""
    return RelayRunner(app, handle_signals=False, access_log=None, **server_options(settings))


def server_options(settings: Settings) -> dict[str, Any]:
    """aiohttp server options that stop a slow or silent client from holding a connection.

    aiohttp arms its keep-alive timer when a connection opens and again after
    each response, and closes the connection when it fires before a complete
    request head has arrived: so ``keepalive_timeout`` bounds both idle time
    and how long a client may take to send its headers. The body has its own
    deadline in ``parse.read_body``. Header sizes stay at aiohttp's limits
    (8190-byte lines and fields, 128 headers), answered 414 (request line) or
    431 (headers) past them, as JSON (``errors.JsonErrorProtocol``).
    """
    return {"keepalive_timeout": settings.client_timeout}


def tune_gc() -> None:
    """Once the relay has started: freeze what it loaded, and collect young objects less often.

    A request allocates many short-lived containers that reference counting
    frees anyway; with 64 requests in flight the default gen-0 threshold (700)
    kept scanning and promoting them, and the full collections that followed
    stalled every client for 50-300 ms. Measured: ~15% less CPU per heartbeat
    and a lower p99 (docs/benchmarks.md). Frozen start-up state (read models,
    live aggregates) is not scanned again. Process-wide, so only ``relay
    serve`` calls it, not an app embedded in another process.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


async def _service_lifetime(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    await service.start()
    yield
    await service.stop()


async def _revalidate_static(request: web.Request, response: web.StreamResponse) -> None:
    """After an upgrade a browser must not pair the new page with an old cached script."""
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"
