"""``GET /metrics`` and the request-counting middleware (the instruments: relay.metrics).

Split from relay.metrics so that the service, which builds the instruments,
does not import the HTTP layer, which imports the service (ADR 0028).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from relay.config import Settings
from relay.http.auth import presented_token
from relay.http.errors import error_response
from relay.http.keys import HUB
from relay.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The matched route's template (``/api/agents/{id}``), never the raw path."""
    match = request.match_info
    route = getattr(match, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return str(resource.canonical)


def metrics_middleware(metrics: Metrics) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Outermost middleware: sees the final status, including the error middleware's."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        except BaseException:
            status = 499  # the client went away (or the server is stopping) mid-request
            raise
        finally:
            metrics.observe_http(route_of(request), request.method, status, time.perf_counter() - t0)

    return middleware


def install(app: web.Application, metrics: Metrics, settings: Settings | None = None) -> None:
    """``GET /metrics`` and the request-counting middleware, on an app not yet started.

    With an admin token the scrape needs it too (``Authorization: Bearer``, as
    Prometheus's ``authorization`` setting sends it): route names, request
    counts and the log head tell an outsider what the fleet is doing.
    ``--metrics-public`` opens it again for a scraper on a private network.
    """
    admin = settings.token if settings is not None and not settings.metrics_public else None
    admin_raw = admin.encode("utf-8", "surrogateescape") if admin else None

    async def serve_metrics(request: web.Request) -> web.Response:
        if admin_raw is not None:
            token = presented_token(request)
            raw = token.encode("utf-8", "surrogateescape") if token is not None else b""
            if not hmac.compare_digest(raw, admin_raw):
                return error_response(
                    401,
                    "/metrics needs the admin token on this relay: send 'Authorization: Bearer <token>' "
                    "(or start it with --metrics-public for a scraper on a private network)",
                    {"WWW-Authenticate": 'Bearer realm="relay"'},
                )
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def count_sse_subscribers(app: web.Application) -> None:
        if HUB in app:
            hub = app[HUB]
            metrics.count_sse_with(lambda: float(hub.stats()["open"]))

    app.middlewares.insert(0, metrics_middleware(metrics))
    app.router.add_get("/metrics", serve_metrics)
    app.on_startup.append(count_sse_subscribers)
