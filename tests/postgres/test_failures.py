"""Failures with several nodes: a node killed mid-storm, PostgreSQL going away and coming back."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.http.helpers import full_log, register_orchestrator
from tests.postgres.conftest import Connect, NodeFactory
from tests.postgres.support import TcpProxy, wait_for
from tests.support.client import Client

pytestmark = pytest.mark.postgres


class Storm:
    """Threads registering agents with unique ids on one node; remembers what was acknowledged."""

    def __init__(self, url: str, tag: str, threads: int = 3) -> None:
        self.url = url
        self.tag = tag
        self.acked: list[str] = []
        self.refused: list[Any] = []
        self.broken = 0  # connection errors: the node is gone
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def __enter__(self) -> Storm:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, k: int) -> None:
        i = 0
        with contextlib.closing(Client(self.url, timeout=10)) as c:
            while not self._stop.is_set():
                aid = f"{self.tag}-{k}-{i}"
                i += 1
                try:
                    r = c.post("/api/agents", {"id": aid})
                except (OSError, http.client.HTTPException):
                    with self._lock:
                        self.broken += 1
                    c.close()
                    time.sleep(0.01)  # the node is down: don't spin on refused connects
                    continue
                with self._lock:
                    if r.status == 201:
                        self.acked.append(aid)
                    else:
                        self.refused.append(r)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


@pytest.mark.slow
def test_kill_9_one_node_during_a_write_storm(node: NodeFactory, connect: Connect) -> None:
    a, b = node("a"), node("b")
    cb = connect(b.url)
    with Storm(a.url, "a") as on_a, Storm(b.url, "b") as on_b:
        wait_for("a few hundred writes on each node", lambda: on_a.count() > 200 and on_b.count() > 200, 60)
        a.kill()
        after_kill = on_b.count()
        wait_for("b keeps acknowledging writes", lambda: on_b.count() > after_kill + 200, 30)
    assert not on_b.refused, on_b.refused[:3]
    assert on_b.broken == 0
    assert not on_a.refused, on_a.refused[:3]
    # Nothing acknowledged by either node is missing on the survivor.
    head = max(e["position"] for e in full_log(cb))
    wait_for("b at the head", lambda: cb.log_head() >= head)
    known = {x["id"] for x in cb.get("/api/agents").json}
    missing = [aid for aid in on_a.acked + on_b.acked if aid not in known]
    assert not missing, missing[:5]
    # The killed node comes back on the same log and agrees.
    a.start()
    ca = connect(a.url)
    wait_for("a caught up", lambda: ca.log_head() >= head)
    assert {x["id"] for x in ca.get("/api/agents").json} == known


@contextlib.contextmanager
def proxied(dsn: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the DSN's server, and the DSN that goes through it."""
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{proxy.port}"
    try:
        yield proxy, urlunsplit(parts._replace(netloc=netloc))
    finally:
        proxy.close()


def check(client: Client, name: str) -> dict[str, Any]:
    return next(c for c in client.get("/api/health").json["checks"] if c["name"] == name)  # type: ignore[no-any-return]


def test_postgres_outage_gives_503_keeps_reads_and_recovers(
    node: NodeFactory, connect: Connect, log_dsn: str
) -> None:
    with proxied(log_dsn) as (proxy, dsn):
        a, b = node("a", dsn=dsn), node("b", dsn=dsn)
        try:
            outage_and_recovery(proxy, connect(a.url), connect(b.url))
        finally:
            # Stop while the store is reachable: a shutdown checkpoint needs it.
            a.stop()
            b.stop()


def outage_and_recovery(proxy: TcpProxy, ca: Client, cb: Client) -> None:
    """503 while PostgreSQL is away, reads from memory, and recovery without a restart."""
    register_orchestrator(ca, "o1")
    acked = ["o1"]
    wait_for("o1 on b", lambda: cb.get("/api/orchestrators/o1").status == 200)

    proxy.cut()
    t0 = time.monotonic()
    r = ca.post("/api/agents", {"id": "during-outage"})
    took = time.monotonic() - t0
    assert r.status == 503, r
    assert "retry" in r.json["error"]
    assert took < 10, f"a write during the outage took {took:.1f} s to fail"
    assert cb.post("/api/orchestrators/o1/heartbeat").status == 503
    # Reads keep serving from memory on both nodes; the raw log needs the store.
    assert ca.get("/api/orchestrators/o1").status == 200
    assert cb.get("/api/agents").status == 200
    assert cb.get("/api/log").status == 503
    health = cb.get("/api/health").json
    assert health["status"] == "error"
    assert check(cb, "store")["status"] == "error"
    wait_for("b notices it lost its subscription", lambda: check(cb, "subscription")["status"] == "error")

    proxy.restore()
    # Recovery without a restart: writes succeed again on both nodes and
    # each node hears about the other's writes again.
    t0 = time.monotonic()
    for c, aid in ((ca, "after-a"), (cb, "after-b")):
        body = {"id": aid}
        wait_for(f"{aid} accepted", lambda c=c, body=body: c.post("/api/agents", body).status == 201, 30)
        acked.append(aid)
    recovered = time.monotonic() - t0
    assert recovered < 15, f"writes took {recovered:.1f} s to recover"
    wait_for("b sees a's write", lambda: cb.get("/api/agents/after-a").status == 200)
    wait_for("a sees b's write", lambda: ca.get("/api/agents/after-b").status == 200)
    wait_for("healthy again", lambda: cb.get("/api/health").json["status"] == "ok", 15)
    assert check(cb, "subscription")["status"] == "ok"
    for c in (ca, cb):
        for aid in acked:
            path = f"/api/orchestrators/{aid}" if aid == "o1" else f"/api/agents/{aid}"
            assert c.get(path).status == 200, (c, aid)
    assert full_log(ca) == full_log(cb)
