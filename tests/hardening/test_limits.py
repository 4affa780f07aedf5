"""Limits with clear errors: sizes, lengths, counts, slow clients and open streams."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

CLIENT_TIMEOUT = 2.0
MAX_STREAMS = 3


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay with short client deadlines and a small stream allowance."""
    proc = RelayProcess(
        tmp_path_factory.mktemp("strict") / "data",
        [
            "--client-timeout",
            str(CLIENT_TIMEOUT),
            "--max-streams-per-client",
            str(MAX_STREAMS),
            "--max-body",
            "65536",
            "--stale-after",
            "3600",
        ],
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(strict: RelayProcess) -> Iterator[Client]:
    c = Client(strict.url)
    try:
        yield c
    finally:
        c.close()


def _sock(url: str) -> socket.socket:
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float, until: bytes | None = None) -> tuple[bool, bytes]:
    """Read until the server closes the connection (or ``until`` arrives) or ``seconds`` pass."""
    s.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
        if until is not None and until in got:
            return False, got
    return False, got


# -- sizes and lengths ------------------------------------------------------------


def _orch(oid: str, **extra: Any) -> dict[str, Any]:
    return {"id": oid, "hostname": f"h-{oid}", "baseDir": f"/srv/{oid}", **extra}


TOO_LONG: list[tuple[str, str, Any, str]] = [
    ("POST", "/api/orchestrators", _orch("x" * 121), "id"),
    ("POST", "/api/orchestrators", _orch("lim", hostname="h" * 201), "hostname"),
    ("POST", "/api/orchestrators", _orch("lim", baseDir="/" + "d" * 4096), "baseDir"),
    ("POST", "/api/orchestrators", _orch("lim", providers=["claude", "codex", "claude"]), "providers"),
    ("POST", "/api/orchestrators", _orch("lim", envKeys=[f"K{i}" for i in range(1001)]), "envKeys"),
    ("POST", "/api/orchestrators", _orch("lim", envKeys=["K" * 257]), "envKeys"),
    ("POST", "/api/agents", {"id": "a", "tags": ["t"] * 65}, "tags"),
    ("POST", "/api/agents", {"id": "a", "tags": ["t" * 101]}, "tags"),
    ("POST", "/api/agents", {"id": "a", "capabilities": ["c"] * 65}, "capabilities"),
    ("POST", "/api/agents", {"id": "a", "name": "n" * 201}, "name"),
    ("POST", "/api/agents", {"id": "a", "label": "n" * 201}, "label"),
    ("POST", "/api/orchestrators/lim/spawn", {"provider": "claude", "prompt": "p" * 4001}, "prompt"),
    ("POST", "/api/orchestrators/lim/spawn", {"provider": "claude", "label": "l" * 201}, "label"),
    (
        "PATCH",
        "/api/orchestrators/lim/agents",
        {"agents": [{"agentId": f"m{i}", "provider": "claude"} for i in range(1001)]},
        "agents",
    ),
    (
        "PATCH",
        "/api/orchestrators/lim/agents",
        {"agents": [{"agentId": "m" * 121, "provider": "claude"}]},
        "agents[0].agentId",
    ),
    ("POST", "/api/orchestrators/lim/commands/c1/result", {"status": "failed", "error": "e" * 4001}, "error"),
]


def test_each_limit_is_a_400_that_names_the_field(api: Client) -> None:
    assert api.post("/api/orchestrators", _orch("lim")).status == 201
    head = api.log_head()
    for method, path, body, field in TOO_LONG:
        r = api.request(method, path, json=body)
        assert r.status == 400, (path, field, r)
        assert r.json["error"].startswith(f"{field}:"), (field, r.json)
    # just under each limit is fine
    assert (
        api.post("/api/orchestrators/lim/spawn", {"provider": "claude", "prompt": "p" * 4000}).status == 202
    )
    assert api.post("/api/agents", {"id": "a" * 120, "tags": ["t" * 100] * 64}).status == 201
    # the spawn records its command and its urgent system message (ADR 0010), the agent one event
    assert api.log_head() == head + 3


def test_a_body_over_the_limit_is_413_and_appends_nothing(api: Client) -> None:
    head = api.log_head()
    big = {"id": "big", "meta": {"blob": "x" * 70_000}}
    r = api.post("/api/agents", big)
    assert r.status == 413
    assert "65536 bytes" in r.json["error"]
    assert api.log_head() == head


def test_a_long_id_in_the_path_is_400_not_404(api: Client) -> None:
    r = api.get("/api/agents/" + "x" * 121)
    assert r.status == 400 and r.json["error"].startswith("id:")


# -- slow clients -----------------------------------------------------------------


def test_a_client_that_sends_its_headers_slowly_is_cut_off(strict: RelayProcess, api: Client) -> None:
    """Slowloris: one header byte at a time never completes a request; the deadline closes it."""
    slow = _sock(strict.url)
    try:
        slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        started = time.monotonic()
        closed = False
        served_meanwhile = 0
        while time.monotonic() - started < CLIENT_TIMEOUT * 4:
            try:
                slow.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            # others are served while the slow client dribbles
            assert api.get("/api/health").status == 200
            served_meanwhile += 1
            closed, _ = _closed_within(slow, 0.3)
            if closed:
                break
        elapsed = time.monotonic() - started
    finally:
        slow.close()
    assert closed, "the relay kept a connection whose headers never finished"
    assert CLIENT_TIMEOUT * 0.5 <= elapsed <= CLIENT_TIMEOUT * 3, elapsed
    assert served_meanwhile >= 3


def test_an_idle_connection_is_closed(strict: RelayProcess) -> None:
    idle = _sock(strict.url)
    try:
        started = time.monotonic()
        closed, got = _closed_within(idle, CLIENT_TIMEOUT * 4)
        elapsed = time.monotonic() - started
    finally:
        idle.close()
    assert closed and got == b""
    assert elapsed >= CLIENT_TIMEOUT * 0.5


def test_a_stalled_body_gets_408_and_appends_nothing(strict: RelayProcess, api: Client) -> None:
    head = api.log_head()
    stalled = _sock(strict.url)
    try:
        stalled.sendall(
            b"POST /api/agents HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"id": "stalled"'
        )
        started = time.monotonic()
        _, got = _closed_within(stalled, CLIENT_TIMEOUT * 8, until=b"send it whole")
        elapsed = time.monotonic() - started
    finally:
        stalled.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"did not arrive within" in got
    assert elapsed < CLIENT_TIMEOUT * 8
    assert api.log_head() == head
    assert api.get("/api/agents/stalled").status == 404


# -- event streams per client -------------------------------------------------------


def _open_stream(url: str) -> tuple[socket.socket, bytes]:
    s = _sock(url)
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
    s.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def test_streams_per_client_are_limited_with_429_and_retry_after(strict: RelayProcess) -> None:
    probe, head = _open_stream(strict.url)
    streams = [probe]
    try:
        assert head.startswith(b"HTTP/1.1 200"), head
        for _ in range(MAX_STREAMS - 1):
            s, head = _open_stream(strict.url)
            streams.append(s)
            assert head.startswith(b"HTTP/1.1 200"), head
        extra, head = _open_stream(strict.url)
        extra.close()
        assert head.startswith(b"HTTP/1.1 429"), head
        assert b"Retry-After: " in head
        streams.pop().close()  # one closes: a new one is welcome again
        deadline = time.monotonic() + 10
        while True:
            s, head = _open_stream(strict.url)
            if head.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                streams.append(s)
                break
            s.close()
        assert head.startswith(b"HTTP/1.1 200"), head
    finally:
        for s in streams:
            s.close()
