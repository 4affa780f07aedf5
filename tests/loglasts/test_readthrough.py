"""Read-through: every reader over an archived log equals the same reader over its twin.

The log is written once (a real relay service, epochs of 300 events), then
its data folder is copied: the twin keeps every epoch live (``RELAY_ARCHIVE=0``),
the original archives every closed epoch. Then two real relay processes
serve them, and each reader is asked the same questions on both: ``GET
/api/log``, the history endpoints, ``?at=``, SSE resumes from archived
positions (a tiny ring, so resumes replay from the store), the read models
rebuilt from position 0, and every ``relay audit`` read command.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.projections.follower import CHECKPOINT_FILE
from tests.loglasts.archivelog import archive_now, copy_data, fleet
from tests.loglasts.epochlog import run_relay
from tests.sse.support import SseStream
from tests.support.client import Client
from tests.support.server import RelayProcess

EPOCH = 200
ARGS = ("--epoch-events", str(EPOCH))
ENV = {"RELAY_SSE_RING": "2", "RELAY_KEEP_HEARTBEATS": "forever"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("readthrough")
    data, twin = base / "data", base / "twin"
    clock = run_relay(data, [fleet(950)], epoch_events=EPOCH, archive=False)
    copy_data(data, twin)
    archive_now(data, clock, epoch_events=EPOCH, keep_heartbeats="forever")
    assert len(list((data / "archive").glob("epoch-*.full"))) >= 4
    return data, twin


@pytest.fixture(scope="module")
def relays(folders: tuple[Path, Path]) -> Iterator[tuple[Client, Client, RelayProcess]]:
    data, twin = folders
    (data / CHECKPOINT_FILE).unlink()  # the archived relay rebuilds its read models from position 0
    a = RelayProcess(data, list(ARGS), env=ENV).start()
    b = RelayProcess(twin, list(ARGS), env={**ENV, "RELAY_ARCHIVE": "0"}).start()
    ca, cb = Client(a.url), Client(b.url)
    try:
        yield ca, cb, a
    finally:
        ca.close()
        cb.close()
        a.stop()
        b.stop()


def pages(c: Client, path: str, after: int, limit: int) -> list[Any]:
    out: list[Any] = []
    while True:
        sep = "&" if "?" in path else "?"
        body = c.get(f"{path}{sep}after={after}&limit={limit}").json
        out.append(body)
        if not body["events"]:
            return out
        after = body["next"]


def test_the_log_pages_the_same(relays: tuple[Client, Client, RelayProcess]) -> None:
    a, b, _ = relays
    for after, limit in ((0, 1000), (0, 137), (EPOCH - 1, 3), (EPOCH, 1), (EPOCH * 4 - 2, 5)):
        got = pages(a, "/api/log", after, limit)
        assert got == pages(b, "/api/log", after, limit)
        assert all(p["intervals"] == [] for p in got)
    assert sum(len(p["events"]) for p in pages(a, "/api/log", 0, 1000)) > EPOCH * 4


def test_history_and_past_state_are_the_same(relays: tuple[Client, Client, RelayProcess]) -> None:
    a, b, _ = relays
    for entity in ("a0", "a1", "a4"):
        for limit in (1000, 41):
            got = pages(a, f"/api/agents/{entity}/history", 0, limit)
            assert got == pages(b, f"/api/agents/{entity}/history", 0, limit)
            assert sum(len(p["events"]) for p in got) > 100
    head = a.log_head()
    assert head == b.log_head()
    for at in (1, 150, EPOCH, EPOCH + 1, 777, head - 1, head):
        for path in ("/api/agents", "/api/orchestrators"):
            assert a.get(f"{path}?at={at}").json == b.get(f"{path}?at={at}").json, (path, at)
    # The rebuilt-from-0 read models (the archived relay had no checkpoint) equal the twin's.
    assert a.get("/api/agents").json == b.get("/api/agents").json


def _stream(url: str, since: int, until: int) -> list[tuple[int, str, str]]:
    with SseStream(url, {"since": str(since)}) as s:
        return [(e.position, e.event, e.data) for e in s.read_until_position(until)]


def test_sse_resumes_from_archived_positions_without_a_seam(
    relays: tuple[Client, Client, RelayProcess], folders: tuple[Path, Path]
) -> None:
    _, b, proc = relays
    log = [e for p in pages(b, "/api/log", 0, 1000) for e in p["events"]]
    last = max(e["position"] for e in log if e["type"] == "AgentHeartbeatReceived")
    for since in (0, 1, EPOCH - 1, EPOCH * 2 + 7, last - 1):
        got = _stream(proc.url, since, last)
        assert got and got[0][0] > since and got[-1][0] == last
        want = _stream(_url_of(b), since, last)
        assert got == want, since


def _url_of(c: Client) -> str:
    return f"http://{c.host}:{c.port}"


def _audit(data: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


@pytest.mark.slow
def test_audit_history_state_and_export_are_the_same(folders: tuple[Path, Path]) -> None:
    data, twin = folders
    for args in (
        ("history", "a1", "--json"),
        ("state", "--at", "450"),
        ("state", "--at", "5"),
        ("export",),
        ("export", "--after", str(EPOCH + 3)),
    ):
        got = _audit(data, *args)
        assert got == _audit(twin, *args), args
        assert got.strip()
