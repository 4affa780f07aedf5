"""The performance shortcuts answer exactly what the plain paths would (docs/benchmarks.md).

Each shortcut skips work the slow path did; these tests pin that nothing a
client or the log can see changes: the list query's reused encodings, the
writer's direct ``save``, and the body read without a timer.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from relay import commands as c
from relay.application import RelayApp
from relay.config import Settings
from relay.projections.readmodels import ReadModels
from relay.store import store_env
from tests.http.helpers import managed, register_orchestrator
from tests.support.client import Client
from tests.support.server import RelayProcess


def _app(tmp_path: Path) -> RelayApp:
    return RelayApp(env=store_env(Settings(data_dir=tmp_path / "data")))


def _register(oid: str, hostname: str, at: int) -> c.RegisterOrchestrator:
    return c.RegisterOrchestrator.of(
        orchestrator_id=oid,
        hostname=hostname,
        base_dir="/srv/work",
        providers=["claude", "codex"],
        env_keys=[],
        meta={},
        token_hash="0" * 64,
        at=at,
    )


def test_the_list_encoding_follows_every_change(tmp_path: Path) -> None:
    """Reused per-orchestrator encodings never serve a stale record."""
    app = _app(tmp_path)
    rm = ReadModels()

    def run(cmd: Any) -> None:
        _, aggs = app.execute(cmd)
        for r in app.save(*aggs):
            rm.apply(r.notification.id, r.domain_event)

    def check() -> None:
        assert rm.orchestrators_json() == orjson.dumps(rm.orchestrators_sorted())

    try:
        for i, oid in enumerate(["b", "a", "c"]):
            run(_register(oid, f"host-{oid}", 1_000 + i))
            check()
        check()  # unchanged: the cached body
        run(c.HeartbeatOrchestrator("a", 5_000))
        check()
        assert orjson.loads(rm.orchestrators_json())[0]["lastSeen"] == 5_000
        run(c.ReportManagedAgents("b", [managed("b-1")], 5_001))
        check()
        run(_register("c", "host-0", 5_002))  # renamed: sorts first now
        check()
        assert orjson.loads(rm.orchestrators_json())[0]["id"] == "c"
        run(c.RemoveOrchestrator("a", 5_003))
        check()
        assert [o["id"] for o in orjson.loads(rm.orchestrators_json())] == ["c", "b"]
        run(_register("a", "host-a", 5_004))  # registered afresh after removal
        check()
        assert len(orjson.loads(rm.orchestrators_json())) == 3
    finally:
        app.close()


def test_the_list_over_http_equals_each_record(client: Client) -> None:
    for oid in ("x", "y", "z"):
        register_orchestrator(client, oid)
    assert client.get("/api/orchestrators").status == 200  # warms the encodings
    assert client.post("/api/orchestrators/y/heartbeat").status == 200
    assert client.patch("/api/orchestrators/z/agents", {"agents": [managed("z-1")]}).status == 200
    listed = client.get("/api/orchestrators").json
    assert listed == [client.get(f"/api/orchestrators/{o}").json for o in ("x", "y", "z")]


def test_save_records_what_the_library_would(tmp_path: Path) -> None:
    """Events, positions and snapshots from our ``save`` reload to the same aggregate."""
    app = _app(tmp_path)
    try:
        _, aggs = app.execute(_register("o", "h", 1))
        _, more = app.execute(_register("p", "h2", 1))
        first = app.save(*aggs, *more)
        assert [r.notification.id for r in first] == [1, 2]
        o = aggs[0]
        for k in range(2, 502):  # crosses the snapshot interval (500)
            o.heartbeat(k)
        recordings = app.save(o)
        assert [r.notification.id for r in recordings] == list(range(3, 503))
        assert [r.domain_event.originator_version for r in recordings] == list(range(2, 502))
        assert app.snapshots is not None
        assert list(app.snapshots.get(o.id))[-1].originator_version == 501
        reloaded = app.repository.get(o.id)
        assert (reloaded.version, reloaded.last_seen) == (o.version, 501)
        assert app.save() == []  # nothing to save: nothing recorded
    finally:
        app.close()


def test_a_body_that_arrives_in_pieces_is_still_read_whole(relay: RelayProcess, client: Client) -> None:
    """Only a body already complete skips the timer; a late tail is awaited, not cut."""
    parts = urlsplit(relay.url)
    body = orjson.dumps({"id": "pieces", "hostname": "host-pieces", "baseDir": "/srv/work"})
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(
            b"POST /api/orchestrators HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
        )
        time.sleep(0.2)  # the handler is waiting on the body's tail (not a synchronisation stand-in)
        s.sendall(body[10:])
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
    assert got.startswith(b"HTTP/1.1 201"), got[:200]
    assert client.get("/api/orchestrators/pieces").json["hostname"] == "host-pieces"
