"""The data folder turns read-only or fills up: writes 503, reads go on, nothing breaks.

Two real failures, made with the kernel rather than mocked:

- read-only: ``chattr +i`` on the SQLite database and its WAL. As root,
  ``chmod`` stops nothing, and remounting read-only fails while the relay holds
  the files open; the immutable flag stops root's writes on open files too.
  (Not on ``-shm``: SQLite maps that file, and a refused write to a mapping is
  SIGBUS, which no program survives; a real read-only remount leaves the
  mapping alone too.)
- full: the data folder on a small tmpfs, filled up with a ballast file.

Either way: every write is answered 503 with a message that says what
happened, appends nothing, and does not hang; reads, the log and the event
stream keep working; health says error; and once the disk is back, writes
succeed again, and after a restart every acknowledged write is there, SQLite's
integrity check passes and ``relay audit verify`` (when present) agrees.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

ARGS = ["--stale-after", "3600", "--max-streams-per-client", "0"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _write(api: Client, i: int) -> tuple[int, str]:
    """One write that leaves a unique trace (a nonce in meta); returns (status, nonce)."""
    nonce = uuid.uuid4().hex
    r = api.post("/api/agents", {"id": f"disk-{i}", "meta": {"nonce": nonce}})
    return r.status, nonce


def _stream_replays(url: str) -> bytes:
    """Open GET /api/events from position 0 and read the first events."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(b"GET /api/events?since=0 HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        got = b""
        while b"\nid: " not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


def _outage(
    tmp_data: Path, break_disk: Callable[[], None], repair_disk: Callable[[], None], reason: str
) -> None:
    relay = RelayProcess(tmp_data, ARGS, store="sqlite").start()
    acked: list[str] = []
    try:
        api = Client(relay.url, timeout=30)
        for i in range(5):
            status, nonce = _write(api, i)
            assert status == 201
            acked.append(nonce)
        assert api.post("/api/orchestrators", {"id": "o", "hostname": "h", "baseDir": "/srv"}).status == 201
        head = api.log_head()
        agents_before = api.get("/api/agents").json

        break_disk()
        try:
            for i in range(5, 10):
                r = api.post("/api/agents", {"id": f"disk-{i}"})
                assert r.status == 503, r
                message = r.json["error"]
                assert "cannot record" in message and "nothing was written" in message
                assert reason in message, message
            r = api.post("/api/orchestrators/o/heartbeat")
            assert r.status == 503, r
            assert api.log_head() == head
            # reads keep working, and answer what was acknowledged
            assert api.get("/api/agents").json == agents_before
            assert api.get("/api/orchestrators/o").status == 200
            assert len(api.get("/api/log?limit=1000").json["events"]) == head
            replay = _stream_replays(relay.url)
            assert replay.startswith(b"HTTP/1.1 200") and b"id: 1\n" in replay, replay[:300]
            health = api.get("/api/health").json
            assert health["status"] == "error", health
            writes = next(c for c in health["checks"] if c["name"] == "writes")
            assert writes["status"] == "error" and "last write failed" in writes["detail"]
        finally:
            repair_disk()

        # recovers: the next writes succeed and health clears
        for i in range(10, 13):
            status, nonce = _write(api, i)
            assert status == 201, (status, relay.output[-20:])
            acked.append(nonce)
        assert api.post("/api/orchestrators/o/heartbeat").status == 200
        assert api.get("/api/health").json["status"] in ("ok", "warn")
        api.close()
    finally:
        relay.stop()

    # nothing corrupted: integrity check, a restart, every acknowledged write
    with contextlib.closing(sqlite3.connect(tmp_data / "relay.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    relay = RelayProcess(tmp_data, ARGS, store="sqlite").start()
    try:
        api = Client(relay.url, timeout=30)
        log = api.get("/api/log?limit=1000").json["events"]
        nonces = {e["data"]["meta"].get("nonce") for e in log if e["type"].startswith("Agent")}
        assert set(acked) <= nonces
        assert {"disk-5", "disk-6", "disk-7"}.isdisjoint({e["entityId"] for e in log})
        api.close()
    finally:
        relay.stop()
    audit = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(tmp_data), "verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "invalid choice: 'audit'" not in audit.stderr:
        assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]


def test_read_only_data_folder(tmp_path: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    data = tmp_path / "data"
    files = [data / "relay.sqlite", data / "relay.sqlite-wal"]

    def freeze() -> None:
        r = _run("chattr", "+i", *map(str, files))
        if r.returncode != 0:
            pytest.skip(f"cannot make files immutable here: {r.stderr.strip()}")

    def thaw() -> None:
        _run("chattr", "-i", *map(str, files))

    try:
        _outage(data, freeze, thaw, "disk I/O error")
    finally:
        thaw()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a disk that can really fill up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = _run("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        _run("umount", str(mnt))


def test_full_disk(small_disk: Path) -> None:
    data = small_disk / "data"
    ballast = small_disk / "ballast"

    def fill() -> None:
        with open(ballast, "wb") as f:
            block = b"\0" * (1 << 20)
            try:
                while True:
                    f.write(block)
                    f.flush()
            except OSError:
                pass
        # top off with small writes until not even a page fits
        with open(small_disk / "ballast2", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 512)

    def free() -> None:
        ballast.unlink(missing_ok=True)
        (small_disk / "ballast2").unlink(missing_ok=True)

    _outage(data, fill, free, "full")
