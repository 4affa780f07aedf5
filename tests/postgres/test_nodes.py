"""Several relay processes on one PostgreSQL log behave as one relay."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg
import pytest

from tests.http.helpers import full_log, managed, register_orchestrator
from tests.postgres.conftest import Connect, NodeFactory
from tests.postgres.support import SseStream, wait_for
from tests.support.client import Client

pytestmark = pytest.mark.postgres


def health_check(client: Client, name: str) -> dict[str, Any]:
    for check in client.get("/api/health").json["checks"]:
        if check["name"] == name:
            return check  # type: ignore[no-any-return]
    raise AssertionError(f"health has no {name!r} check")


def test_first_start_creates_the_schema_and_the_log_survives_a_restart(
    node: NodeFactory, log_dsn: str, connect: Connect
) -> None:
    a = node("a")
    ca = connect(a.url)
    register_orchestrator(ca, "o1")
    assert ca.post("/api/orchestrators/o1/heartbeat").status == 200
    before = full_log(ca)
    with psycopg.connect(log_dsn) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )}
    assert {"relay_events", "relay_snapshots"} <= tables
    a.stop()
    a.start()
    ca = connect(a.url)
    assert full_log(ca) == before
    assert ca.get("/api/orchestrators/o1").json["status"] == "online"


def test_a_write_on_a_is_read_and_streamed_on_b_promptly(node: NodeFactory, connect: Connect) -> None:
    a, b = node("a"), node("b")
    ca, cb = connect(a.url), connect(b.url)
    with SseStream(b.url, "types=orchestrator") as stream:
        t0 = time.monotonic()
        register_orchestrator(ca, "o1")
        ev = stream.events_until(lambda e: e.name == "orchestrator.status" and e.data["id"] == "o1")[-1]
        streamed = time.monotonic() - t0
    assert cb.get("/api/orchestrators/o1").json["hostname"] == "host-o1"
    # Same positions on every node: the SSE id on B is A's log position.
    assert ev.id == full_log(ca)[-1]["position"] == full_log(cb)[-1]["position"]
    # Driven by LISTEN/NOTIFY: well under any polling interval worth having, and B heard it.
    assert streamed < 2.0, streamed
    sub = health_check(cb, "subscription")
    assert sub["status"] == "ok", sub


def test_read_your_writes_per_node_while_the_other_node_writes(node: NodeFactory, connect: Connect) -> None:
    a, b = node("a"), node("b")
    ca, cb = connect(a.url), connect(b.url)
    register_orchestrator(ca, "o1")
    wait_for("o1 on b", lambda: cb.get("/api/orchestrators/o1").status == 200)
    for i in range(30):
        r = ca.patch("/api/orchestrators/o1/agents", {"agents": [managed(f"a-{i}")]})
        assert r.status == 200, r
        # B writes to the same orchestrator, so its live copy is stale at each step.
        assert cb.post("/api/orchestrators/o1/heartbeat").status == 200
        got = cb.get("/api/orchestrators/o1").json["managedAgents"]
        # B answered after its own write was applied, and that write came after A's.
        assert [m["agentId"] for m in got] == [f"a-{i}"]


def test_concurrent_writes_to_one_entity_on_both_nodes_lose_nothing(
    node: NodeFactory, connect: Connect
) -> None:
    a, b = node("a"), node("b")
    register_orchestrator(connect(a.url), "o1", providers=["claude"])
    wait_for("o1 on b", lambda: connect(b.url).get("/api/orchestrators/o1").status == 200)
    acked: list[str] = []
    failures: list[Any] = []
    lock = threading.Lock()

    def spawn_many(url: str, tag: str) -> None:
        with contextlib.closing(Client(url)) as c:
            for i in range(60):
                r = c.post("/api/orchestrators/o1/spawn", {"provider": "claude", "label": f"{tag}-{i}"})
                with lock:
                    if r.status == 202:
                        acked.append(r.json["command"]["id"])
                    else:
                        failures.append(r)

    threads = [threading.Thread(target=spawn_many, args=(url, f"{name}{k}"))
               for k in range(3) for name, url in (("a", a.url), ("b", b.url))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert len(acked) == 360
    for url in (a.url, b.url):
        c = connect(url)
        wait_for("every command on " + url,
                 lambda c=c: len(c.get("/api/orchestrators/o1/commands").json) == 360)  # type: ignore[misc]
        assert sorted(x["id"] for x in c.get("/api/orchestrators/o1/commands").json) == sorted(acked)
    log = full_log(connect(a.url))
    assert log == full_log(connect(b.url))
    spawned = [e for e in log if e["type"] == "SpawnRequested"]
    assert sorted(e["data"]["commandId"] for e in spawned) == sorted(acked)


def test_sse_resume_on_another_node_has_no_gap_and_no_repeat(node: NodeFactory, connect: Connect) -> None:
    a, b = node("a"), node("b")
    ca = connect(a.url)
    register_orchestrator(ca, "o1")
    for i in range(20):
        assert ca.post("/api/orchestrators/o1/heartbeat").status == 200
        if i % 5 == 0:
            assert ca.patch("/api/orchestrators/o1/agents", {"agents": [managed(f"m{i}")]}).status == 200
    head = full_log(ca)[-1]["position"]
    with SseStream(a.url, "since=0") as whole:
        expected = whole.events_until(lambda e: e.id >= head)
    # Leave after a whole position (one position can carry two events).
    n = next(i for i in range(len(expected) // 2, len(expected)) if expected[i].id != expected[i + 1].id) + 1
    with SseStream(a.url, "since=0") as first:
        part1 = [first.next_event() for _ in range(n)]
    # Writes continue on B while the client is away; it comes back to B.
    cb = connect(b.url)
    wait_for("b caught up", lambda: cb.log_head() >= head)
    assert cb.post("/api/orchestrators/o1/heartbeat").status == 200
    new_head = full_log(cb)[-1]["position"]
    with SseStream(b.url, "since=0", last_event_id=part1[-1].id) as resumed:
        part2 = resumed.events_until(lambda e: e.id >= new_head)
    got = [(e.id, e.name, e.data) for e in part1 + part2]
    with SseStream(a.url, "since=0") as again:
        want = again.events_until(lambda e: e.id >= new_head)
    assert got == [(e.id, e.name, e.data) for e in want]
    ids = [e.id for e in part1 + part2]
    assert ids == sorted(ids)
