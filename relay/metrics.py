"""Operations metrics, served at ``GET /metrics`` in Prometheus text format.

One registry per service (not the library's global one), so several relays
in one process, as in tests, do not share counters. What is counted:

- events this node appended, by type (``relay_events_appended_total``), and
  its reaps by kind (``relay_reaps_total``): counted on the writer thread
  after each commit, from what was actually stored;
- commit latency (one transaction, ``relay_commit_seconds``) and write latency
  (a command from submission until durable *and* in the read models,
  ``relay_write_seconds``);
- read-model lag behind the newest position this node knows of, computed at
  scrape time (``relay_read_model_lag_events``);
- SSE subscribers (``relay_sse_subscribers``): the stream sets the gauge or
  hands over a function that counts;
- HTTP requests by route template (never raw paths, so ids cannot blow up the
  label set), method and status, and their latency by route.

Per-request work is two dictionary look-ups and two lock-protected updates:
labelled children are cached because ``labels()`` itself costs more than the
increment.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

if TYPE_CHECKING:
    from relay.config import Settings
    from relay.service import RelayService

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_REAP_TOPICS = {"AgentReaped": "agent", "OrchestratorReaped": "orchestrator"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    """The relay's instruments, in a registry of their own."""

    def __init__(self, service: RelayService | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.events_appended = Counter(
            "relay_events_appended", "Events this node appended to the log, by type.", ["type"], registry=r
        )
        self.reaps = Counter(
            "relay_reaps", "Entities this node's reaper marked offline, by kind.", ["kind"], registry=r
        )
        self.commit_seconds = Histogram(
            "relay_commit_seconds",
            "Time to commit one batch of events to the store (one transaction).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_seconds = Histogram(
            "relay_write_seconds",
            "Time from a command's submission until it is durable and in the read models.",
            ["command"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "relay_http_requests", "HTTP requests, by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )
        self.http_seconds = Histogram(
            "relay_http_request_seconds",
            "HTTP request handling time by route template (SSE streams: their whole life).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sse_subscribers = Gauge(
            "relay_sse_subscribers", "Open SSE streams on this node.", registry=r
        )
        self.read_model_position = Gauge(
            "relay_read_model_position", "Log position the read models are at.", registry=r
        )
        self.log_head = Gauge(
            "relay_log_head_position", "Newest log position this node knows exists.", registry=r
        )
        self.read_model_lag = Gauge(
            "relay_read_model_lag_events",
            "Events committed to the log but not yet in this node's read models.",
            registry=r,
        )
        self.writer_queue = Gauge(
            "relay_writer_queue_depth", "Commands waiting for the writer thread.", registry=r
        )
        self.store_reachable = Gauge(
            "relay_store_up",
            "1 when the last write succeeded (and, on PostgreSQL, the LISTEN connection is up).",
            registry=r,
        )
        self._appended: dict[str, Any] = {}
        self._writes: dict[str, Any] = {}
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        if service is not None:
            self.bind(service)

    def bind(self, service: RelayService) -> None:
        """Gauges computed at scrape time from the running service."""

        def position() -> float:
            return float(service.rm.position)

        def head() -> float:
            tail = service.tail
            return float(max(tail.head_seen, service.rm.position) if tail else service.rm.position)

        def queue() -> float:
            return float(service.writer.queue_depth()) if service.writer else 0.0

        def up() -> float:
            w = service.writer
            if w is not None and w.last_error:
                return 0.0
            listener = getattr(service, "listener", None)
            if listener is not None and not listener.connected:
                return 0.0
            return 1.0

        self.read_model_position.set_function(position)
        self.log_head.set_function(head)
        self.read_model_lag.set_function(lambda: head() - position())
        self.writer_queue.set_function(queue)
        self.store_reachable.set_function(up)
        self.registry.register(_WriterCounters(service))

    def count_sse_with(self, count: Callable[[], float]) -> None:
        """Let the SSE hub report its subscriber count at scrape time instead of setting the gauge."""
        self.sse_subscribers.set_function(count)

    # -- observations ----------------------------------------------------------------

    def observe_commit(self, recordings: list[Any], seconds: float) -> None:
        """On the writer thread, after a commit: latency and what was appended."""
        self.commit_seconds.observe(seconds)
        appended = self._appended
        for r in recordings:
            topic = r.notification.topic
            child = appended.get(topic)
            if child is None:
                child = appended[topic] = self.events_appended.labels(topic)
            child.inc()
            kind = _REAP_TOPICS.get(topic)
            if kind is not None:
                self.reaps.labels(kind).inc()

    def observe_write(self, command: object, seconds: float) -> None:
        name = type(command).__name__
        child = self._writes.get(name)
        if child is None:
            child = self._writes[name] = self.write_seconds.labels(name)
        child.observe(seconds)

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        pair = self._http.get(key)
        if pair is None:
            pair = self._http[key] = (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _WriterCounters:
    """The writer's own tallies, read at scrape time (the writer thread keeps them)."""

    def __init__(self, service: RelayService) -> None:
        self.service = service

    def collect(self) -> Any:
        w = self.service.writer
        yield CounterMetricFamily(
            "relay_commits", "Transactions the writer committed (group commits).",
            value=w.batches if w else 0,
        )
        yield CounterMetricFamily(
            "relay_write_conflicts",
            "Batches decided again because another relay node wrote the same entity first.",
            value=w.conflicts if w else 0,
        )


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
    from relay.http.auth import presented_token  # not at import time: auth imports the service
    from relay.http.errors import error_response

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
        from relay.http.keys import HUB  # not at import time: keys imports the service

        if HUB in app:
            hub = app[HUB]
            metrics.count_sse_with(lambda: float(hub.stats()["open"]))

    app.middlewares.insert(0, metrics_middleware(metrics))
    app.router.add_get("/metrics", serve_metrics)
    app.on_startup.append(count_sse_subscribers)
