"""Operations metrics, served at ``GET /metrics`` in Prometheus text format.

The instruments live here, below the HTTP layer and without aiohttp; the
route and the request-counting middleware are relay.http.metrics (ADR 0028).

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

from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_REAP_TOPICS = {"AgentReaped": "agent", "OrchestratorReaped": "orchestrator"}



class RelayService(Protocol):
    """What the scrape-time gauges read of the running service (relay.service.RelayService).

    A protocol, not an import: the service builds its Metrics, so importing it
    here would be a cycle (ADR 0028).
    """

    rm: Any
    tail: Any
    writer: Any


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
