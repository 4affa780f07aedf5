"""The relay's side of live output, against a real relay process and a host played by the test.

The "host" here is HTTP calls with an orchestrator token and a raw event
stream, so the relay's protocol (watch frames, snapshots, the buffer for late
viewers, limits) is checked push by push; tests/output/test_live.py runs the
real daemon and tmux.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from relay.http.openapi import document
from tests.http.helpers import managed, register_orchestrator
from tests.output.conftest import SseViewer
from tests.support.client import Client, Response
from tests.support.server import RelayProcess

TOKEN = "output-admin-token"
LIMITS = [
    "--output-viewers", "2", "--output-host-viewers", "3", "--output-buffer", "4096",
    "--output-push-max", "8192", "--output-rate", "16384", "--output-pushes", "5",
]


DOC = document()


def valid(name: str, data: Any) -> bool:
    """``data`` fits the served document's schema ``name`` (the contract the dashboard reads)."""
    schema = {**DOC["components"]["schemas"][name], "components": DOC["components"]}
    return jsonschema_rs.Draft202012Validator(schema).is_valid(data)


def wait_for(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    proc = RelayProcess(
        tmp_path_factory.mktemp("relay") / "data",
        ["--token", TOKEN, "--keepalive", "1", "--stale-after", "3600", *LIMITS],
    ).start()
    yield proc
    proc.stop()


class FakeHost:
    """A host as the relay sees one: its own token, a managed-agent report, its event
    stream (where watch frames arrive) and output pushes."""

    def __init__(self, relay: RelayProcess, agents: tuple[str, ...] = ("a1", "a2", "a3")) -> None:
        self.relay = relay
        self.oid = f"h-{uuid.uuid4().hex[:8]}"
        self.admin = Client(relay.url, TOKEN)
        self.token = register_orchestrator(self.admin, self.oid).json["orchestratorToken"]
        self.api = Client(relay.url, self.token)
        r = self.api.patch(f"/api/orchestrators/{self.oid}/agents",
                           {"agents": [managed(a) for a in agents]})
        assert r.status == 200, r
        self.stream = self.follow()
        self.viewers: list[SseViewer] = []

    def follow(self) -> SseViewer:
        """A (new) connection of this host's event stream, from now."""
        s = SseViewer(self.relay.url, f"/api/events?orchestrator={self.oid}", self.token)
        wait_for(lambda: s.named("orchestrator.watch"), "the watch set on connect")
        return s

    def frames(self, stream: SseViewer | None = None) -> list[dict[str, Any]]:
        return (stream or self.stream).named("orchestrator.watch")

    def view(self, agent: str, token: str | None = TOKEN, **kw: Any) -> SseViewer:
        v = SseViewer(self.relay.url, f"/api/orchestrators/{self.oid}/agents/{agent}/output",
                      token, **kw)
        self.viewers.append(v)
        return v

    def view_when_free(self, agent: str, **kw: Any) -> SseViewer:
        """A viewer, retrying while the relay has not yet noticed that another one left
        (it looks once a second) and answers 429."""
        def attempt() -> SseViewer | None:
            v = self.view(agent, **kw)
            wait_for(lambda: v.status, "an answer")
            if v.status == 200:
                return v
            assert v.status == 429, v.status
            v.close()
            return None

        return wait_for(attempt, f"a free viewer slot on {agent}")

    def push(self, *chunks: dict[str, Any], body: bytes | None = None) -> Response:
        if body is None:
            return self.api.post(f"/api/orchestrators/{self.oid}/output", {"chunks": list(chunks)})
        return self.api.post(f"/api/orchestrators/{self.oid}/output", body=body,
                             headers={"Content-Type": "application/json"})

    def close(self) -> None:
        for v in [*self.viewers, self.stream]:
            v.close()
        self.admin.close()
        self.api.close()


@pytest.fixture
def host(relay: RelayProcess) -> Iterator[FakeHost]:
    h = FakeHost(relay)
    yield h
    h.close()


def snap(agent: str, data: str, reset: bool = True) -> dict[str, Any]:
    return {"agentId": agent, "kind": "snapshot", "data": data, "reset": reset, "cols": 80, "rows": 24}


def out(agent: str, data: str) -> dict[str, Any]:
    return {"agentId": agent, "data": data, "at": 1_800_000_000_000}


def test_the_host_hears_who_watches_on_its_stream_without_log_ids(host: FakeHost) -> None:
    assert host.frames()[-1]["agents"] == []  # told at once on connect: nobody
    v1 = host.view("a1")
    frame = wait_for(lambda: host.frames()[1:], "a frame for the first viewer")[-1]
    assert frame["agents"] == ["a1"] and frame["refresh"] == ["a1"]
    assert set(frame["limits"]) == {"pushesPerSecond", "bytesPerSecond", "pushBytes"}
    assert all(valid("OutputWatch", f) for f in host.frames())
    v2 = host.view("a1")
    wait_for(lambda: v2.status == 200, "the second viewer's stream")
    # A reconnecting host hears the set again, with the agents whose viewers wait for a screen.
    again = host.follow()
    assert host.frames(again)[-1]["agents"] == ["a1"] and host.frames(again)[-1]["refresh"] == ["a1"]
    assert len(host.frames()) == 2  # the second viewer of a1 changed nothing for the host
    v1.close()
    v2.close()
    last = wait_for(lambda: host.frames()[2:], "a frame once nobody watches")[-1]
    assert last["agents"] == [] and len(host.frames()) == 3
    # Not log events: no id line anywhere near them, so Last-Event-ID never moves.
    for block in host.stream.raw.split(b"event: orchestrator.watch")[1:]:
        assert b"id:" not in block.split(b"\n\n")[0]
    again.close()


def test_viewers_get_the_screen_then_output_and_late_ones_start_at_once(host: FakeHost) -> None:
    v1 = host.view("a1")
    wait_for(lambda: host.frames()[1:], "the watch frame")
    tricky = 'red \x1b[31mX\x1b[0m\r\n"quoted" \\ \u2028 é\ndata: injected\n\nevent: end\n\n'
    assert host.push(snap("a1", "screen\r\n"), out("a1", tricky)).json == {
        "ok": True, "delivered": 2, "unwatched": []}
    wait_for(lambda: v1.named("output"), "output")
    assert v1.named("snapshot") == [{"data": "screen\r\n", "cols": 80, "rows": 24}]
    assert v1.named("output") == [{"data": tricky, "at": 1_800_000_000_000}]  # intact, one event
    assert v1.text() == "screen\r\n" + tricky
    assert all(valid("OutputEvent", data) for _, data in v1.events)
    frames = len(host.frames())
    v2 = host.view("a1")  # from the relay's buffer: no need to ask the host
    wait_for(lambda: v2.named("output"), "the buffer for a late viewer")
    assert v2.text() == v1.text() and len(host.frames()) == frames
    # Past --output-buffer (4096) the relay forgets, and asks the host when someone joins.
    for _ in range(3):
        assert host.push(out("a1", "y" * 2000)).status == 200
    v2.close()
    v3 = host.view_when_free("a1")
    frame = wait_for(lambda: host.frames()[frames:], "a refresh request")[-1]
    assert frame["refresh"] == ["a1"] and len(host.frames()) == frames + 1
    assert host.push(snap("a1", "fresh screen", reset=False), out("a1", "after")).status == 200
    wait_for(lambda: v3.text() == "fresh screenafter", "the fresh screen for v3")
    wait_for(lambda: v1.text().endswith("after"), "v1's output")
    assert len(v1.named("snapshot")) == 1  # a screen without reset goes only to those waiting
    host.push(snap("a1", "restarted"))  # reset: everyone starts over from it
    wait_for(lambda: v1.text() == "restarted" and v3.text() == "restarted", "the reset screen")


def test_output_never_reaches_the_log(host: FakeHost) -> None:
    head = host.admin.log_head()
    v = host.view("a1")
    wait_for(lambda: host.frames()[1:], "the watch frame")
    r = host.push(snap("a1", "$ export API_KEY=sk-very-secret"), out("a2", "nobody watches a2"),
                  {"agentId": "a1", "data": "", "at": 5.0, "rows": 3.0})  # 5.0 is the integer 5
    assert r.json == {"ok": True, "delivered": 2, "unwatched": ["a2"]}
    wait_for(lambda: v.named("snapshot"), "the screen")
    v.close()
    assert host.admin.log_head() == head
    log = json.dumps(host.admin.get("/api/log?after=0&limit=1000").json)
    assert "sk-very-secret" not in log and "orchestrator.watch" not in log


def refused(r: Response, status: int, *words: str) -> None:
    assert r.status == status, r
    assert isinstance(r.json, dict) and set(r.json) == {"error"}, r
    for word in words:
        assert word in r.json["error"], (word, r.json)


def test_limits_and_bad_requests_are_4xx_json_and_append_nothing(relay: RelayProcess) -> None:
    host, other = FakeHost(relay), FakeHost(relay)
    try:
        head = host.admin.log_head()
        base = f"/api/orchestrators/{host.oid}"
        a, b = host.view("a1"), host.view("a1")
        wait_for(lambda: a.status == 200 and b.status == 200, "two viewers")
        third = host.view("a1")
        wait_for(lambda: third.status, "an answer")
        assert third.status == 429 and "--output-viewers 2" in third.error()["error"]
        assert "retry-after:" in third.headers.lower()
        c = host.view("a2")
        wait_for(lambda: c.status == 200, "a viewer of a2")
        fourth = host.view("a3")
        wait_for(lambda: fourth.status, "an answer")
        assert fourth.status == 429 and "--output-host-viewers 3" in fourth.error()["error"]
        for v in (a, b, c):
            v.close()

        refused(host.admin.get(f"{base}/agents/nope/output"), 404, "no managed agent 'nope'")
        refused(host.admin.get("/api/orchestrators/nope/agents/a1/output"), 404, "no orchestrator")
        refused(host.api.get(f"{base}/agents/a1/output"), 403)  # only the admin watches
        refused(other.api.post(f"{base}/output", {"chunks": []}), 403)  # another host's token
        refused(host.push({"agentId": "a1", "data": 5}), 400, "chunks[0].data")
        refused(host.push({"agentId": "a1", "data": "x", "kind": "screen"}), 400, "chunks[0].kind")
        refused(host.push({"agentId": "a1", "data": "x", "rows": 0}), 400, "chunks[0].rows")
        refused(host.push(body=b'{"chunks": "no"}'), 400, "chunks")
        big = json.dumps({"chunks": [out("a1", "z" * 9000)]}).encode()
        refused(host.push(body=big), 413, "--output-push-max")
        assert host.view_when_free("a1", query_token=True).status == 200  # as a browser does

        # Pushes per second (5, one second's burst), then bytes per second (16384).
        statuses = [host.push(out("a1", "p")).status for _ in range(8)]
        assert statuses[:5] == [200] * 5 and 429 in statuses[5:], statuses
        r = other.push(out("a1", "q" * 7000))
        assert r.status == 200
        assert other.push(out("a1", "q" * 7000)).status == 200
        r = other.push(out("a1", "q" * 7000))
        refused(r, 429, "--output-rate 16384")
        assert int(r.headers["retry-after"]) >= 1
        assert host.admin.log_head() == head
    finally:
        host.close()
        other.close()


PUSHES = 128


def test_a_slow_viewer_is_cut_and_the_others_keep_streaming(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data", [
        "--token", TOKEN, "--keepalive", "1", "--output-buffer", "4096", "--output-push-max",
        "65536", "--output-rate", "100000000", "--output-pushes", "1000",
    ]).start()
    host = FakeHost(relay)
    try:
        stuck = host.view("a1", read=False)  # never reads, with a 4 KiB receive buffer
        fast = host.view("a1")
        wait_for(lambda: host.frames()[1:], "the watch frame")
        wait_for(lambda: fast.status == 200, "the fast viewer's stream")
        host.push(snap("a1", "start"))
        line = "\x1b[32m" + "z" * 1000 + "\x1b[0m\r\n"
        slowest = 0.0
        for i in range(PUSHES):  # ~1 MB: far more than the stuck viewer's buffers take
            t0 = time.monotonic()
            assert host.push(out("a1", f"{i:04d}" + line * 8)).status == 200
            slowest = max(slowest, time.monotonic() - t0)
        assert slowest < 1.0  # the stuck viewer never held a push up
        wait_for(lambda: fast.text().count("\r\n") == PUSHES * 8, "everything on the fast viewer")
        # The stuck one was disconnected: reading now, it finds the end of the stream
        # after a part of the output.
        stuck.sock.settimeout(2)
        got, ended, deadline = b"", False, time.monotonic() + 10
        while not ended and time.monotonic() < deadline:  # keep-alive comments come every 1 s
            try:
                data = stuck.sock.recv(65536)
            except TimeoutError:
                continue  # open, and quiet
            except ConnectionResetError:
                data = b""
            ended = not data
            got += data
        assert ended, "the stuck viewer's stream is still open"
        assert b"0000" in got and b"%04d" % (PUSHES - 1) not in got
        assert host.push(out("a1", "still here")).json["delivered"] == 1
        wait_for(lambda: fast.text().endswith("still here"), "the fast viewer after the cut")
        relay.stop()  # a clean stop tells the viewers why their stream ends
        wait_for(lambda: fast.closed.is_set(), "the end of the stream")
        assert fast.named("end") == [{"reason": "the relay is shutting down"}]
        assert valid("OutputEnd", fast.named("end")[0])
    finally:
        host.close()
        relay.stop()
