"""The command stream against a hand-written fake relay: resume, reconcile, dedupe.

A fake (not the real relay) because these tests need control over the wire:
events cut mid-line and mid-CRLF, a connection dropped on purpose, the
``Last-Event-ID`` the daemon sends back. The real relay is used everywhere else.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.host.config import HostConfig
from relay.host.daemon import HostDaemon
from relay.host.state import HostState, StateFile
from relay.host.tmux import Tmux
from tests.host.conftest import requires_tmux

OID = "fake-host"


def _command(cid: str, kind: str = "shutdown", status: str = "pending") -> dict[str, Any]:
    return {"id": cid, "orchestratorId": OID, "kind": kind, "status": status,
            "agentId": None, "requestedAt": 1}


def _frame(position: int, data: dict[str, Any], name: str = "orchestrator.command") -> bytes:
    return f"id: {position}\r\nevent: {name}\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


class FakeRelay:
    """Just enough of the relay's API for one host, with scripted event streams."""

    def __init__(self) -> None:
        self.pending = [_command("c1")]
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.auth: list[tuple[str, str | None]] = []
        self.resumed_from: list[str | None] = []
        self.streams = [
            # first connection: one command, cut into awkward pieces, then dropped
            [b": hello\r\n\r", b"\n" + _frame(5, _command("c2"))[:17], _frame(5, _command("c2"))[17:]],
            # second connection: a result echo (ignored), a new command, a keep-alive
            [_frame(6, _command("c1", status="done")), _frame(7, _command("c3")), b": ka\n\n"],
        ]
        self.all_done = asyncio.Event()
        self.refuse: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        base = f"/api/orchestrators/{OID}"
        app.router.add_post("/api/orchestrators", self.register)
        app.router.add_post(f"{base}/heartbeat", self.ok)
        app.router.add_patch(f"{base}/agents", self.ok)
        app.router.add_get(f"{base}/commands", self.commands)
        app.router.add_post(f"{base}/commands/{{cid}}/result", self.result)
        app.router.add_get("/api/events", self.events)
        return app

    def _seen(self, request: web.Request) -> None:
        self.auth.append((request.path, request.headers.get("Authorization")))

    async def register(self, request: web.Request) -> web.Response:
        self._seen(request)
        body = await request.json()
        return web.json_response({**body, "status": "online", "orchestratorToken": "orch-tok"},
                                 status=201)

    async def ok(self, request: web.Request) -> web.Response:
        self._seen(request)
        return web.json_response({"ok": True})

    async def commands(self, request: web.Request) -> web.Response:
        self._seen(request)
        assert request.query.get("status") == "pending"
        return web.json_response(self.pending)

    async def result(self, request: web.Request) -> web.Response:
        self._seen(request)
        cid = request.match_info["cid"]
        self.results.append((cid, await request.json()))
        self.pending = [c for c in self.pending if c["id"] != cid]
        if {c for c, _ in self.results} >= {"c1", "c2", "c3"}:
            self.all_done.set()
        return web.json_response({"id": cid})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        assert request.query.get("orchestrator") == OID
        position = request.headers.get("Last-Event-ID")
        self.resumed_from.append(position)
        if position in self.refuse:
            return web.json_response({"error": "position is after the newest"}, status=409)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks = self.streams.pop(0) if self.streams else []
        for chunk in chunks:
            await resp.write(chunk)
            await asyncio.sleep(0)
        if not self.streams and not chunks:
            await self.all_done.wait()  # stay open, like a quiet live stream
        return resp


async def _run_daemon(fake: FakeRelay, tmp_path: Path, until_position: str) -> None:
    """Run a daemon against ``fake`` until all commands are done and ``until_position`` seen."""
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    tmux = Tmux(f"relay-stream-{tmp_path.name[-12:]}")
    config = HostConfig(
        relay_url=f"http://127.0.0.1:{port}", orchestrator_id=OID, hostname="fake",
        base_dir=tmp_path, providers={"claude": ("claude",)},
        state_path=tmp_path / "state.json", admin_token="admin-tok",
        tmux_socket=tmux.socket, stale_after=3, check_every=0.2, max_backoff=0.2,
    )
    daemon = HostDaemon(config, tmux)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(fake.all_done.wait(), 20)
        await asyncio.wait_for(_until(lambda: daemon.state.last_event_id == until_position), 20)
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)
        await runner.cleanup()
        await tmux.kill_server()


@requires_tmux
def test_stream_resumes_after_a_drop_and_runs_each_command_once(tmp_path: Path) -> None:
    fake = FakeRelay()
    state_path = tmp_path / "state.json"
    asyncio.run(_run_daemon(fake, tmp_path, "7"))

    assert sorted(c for c, _ in fake.results) == ["c1", "c2", "c3"]
    assert all(r == {"status": "done"} for _, r in fake.results)
    assert fake.resumed_from[:2] == [None, "5"]
    # The admin token only registers; everything else uses the orchestrator token.
    for path, auth in fake.auth:
        expected = "Bearer admin-tok" if path == "/api/orchestrators" else "Bearer orch-tok"
        assert auth == expected, (path, auth)
    saved = StateFile(state_path).load()
    assert saved.last_event_id == "7"
    assert saved.orchestrator_token == "orch-tok"
    assert {"c1", "c2", "c3"} <= set(saved.handled)
    assert saved.outbox == {} and saved.started == {}


async def _until(check: Any, every: float = 0.02) -> None:
    while not check():
        await asyncio.sleep(every)


@requires_tmux
def test_a_position_the_relay_cannot_resume_from_is_dropped(tmp_path: Path) -> None:
    """A relay whose log was reset refuses our position; we follow from now instead."""
    StateFile(tmp_path / "state.json").save(
        HostState(orchestrator_id=OID, relay_url="", last_event_id="999")
    )
    fake = FakeRelay()
    fake.refuse = {"999"}
    asyncio.run(_run_daemon(fake, tmp_path, "7"))
    assert fake.resumed_from[:3] == ["999", None, "5"]
    assert sorted(c for c, _ in fake.results) == ["c1", "c2", "c3"]
