"""Settled things leave memory, open things never do (ADR 0036), as a state machine over HTTP.

The relay runs in this process (tests/property/inprocess.py) on a ``FakeClock``
with ``--keep-settled 60s``: spawns are answered or left open, messages are
claimed, acked, deleted or left in the inbox, time passes, and the reaper's
pass (which decides the forgetting) runs. Late references to anything ever
named (a result for a command, an ack or claim of a message) are tried at
any moment. Checked after each step (docs/invariants.md):

L9.  a command or message settled at least keep-settled before the last reaper
     pass is in no read model (GET answers 404) and in no live aggregate of
     the writer, and its events are still in ``GET /api/log``;
L10. an open command or message is never forgotten: it is in the read model
     and in the writer's aggregates;
L11. a late reference to a forgotten command or message is answered 404 or
     409 naming it, never 5xx, and appends nothing;
and, at the end, the read models rebuilt from position 0 equal the live ones
(the forgetting is recorded, so the fold stays deterministic).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from relay.clock import FakeClock
from relay.domain.message import Message
from relay.domain.orchestrator import Orchestrator
from relay.projections.readmodels import ReadModels
from tests.http.helpers import full_log
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client

KEEP_MS = 60_000
HOST = "h0"
AGENTS = ("a0", "a1")


class ForgetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-prop-forget-"))
        self.clock = FakeClock()
        self.relay = InProcessRelay(
            self.dir / "data", self.clock, stale_after=3600.0, reap_every=3600.0,
            keep_settled=f"{KEEP_MS // 1000}s",
        ).start()
        self.http = Client(self.relay.url)
        # id -> when it settled (None: open), as this machine saw it happen.
        self.commands: dict[str, int | None] = {}
        self.messages: dict[str, int | None] = {}
        self.claims: dict[str, str] = {}  # message id -> claim id held by its recipient
        self.last_pass_at: int | None = None

    def teardown(self) -> None:
        self.http.close()
        self.relay.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------

    def forgotten(self, settled: dict[str, int | None]) -> list[str]:
        """What must be forgotten by now: settled at least keep-settled before the last pass."""
        if self.last_pass_at is None:
            return []
        upto = self.last_pass_at - KEEP_MS
        return sorted(i for i, at in settled.items() if at is not None and at <= upto)

    def live_orchestrator(self) -> Orchestrator:
        app = self.relay.service.app
        assert app is not None
        o = app.live.get(Orchestrator.create_id(HOST))
        if o is None:  # not loaded since the start: load it as the writer would
            o = app.repository.get(Orchestrator.create_id(HOST))
        return o  # type: ignore[return-value]

    def refused_without_a_trace(self, r: Any, what: str, head: int) -> None:
        """L11: a late reference is a 4xx naming it (never a 5xx), and appends nothing."""
        assert r.status < 500, (what, r)
        if r.status >= 400:
            assert r.status in (404, 409), (what, r)
            assert what in r.json["error"], (what, r.json)
            assert self.http.log_head() == head, f"a refused {what} appended to the log"

    # -- rules ------------------------------------------------------------------------

    @initialize()
    def register(self) -> None:
        r = self.http.post("/api/orchestrators", {"id": HOST, "hostname": "h", "baseDir": "/srv"})
        assert r.status == 201, r
        for aid in AGENTS:
            assert self.http.post("/api/agents", {"id": aid}).status == 201

    @rule()
    def spawn(self) -> None:
        self.http.post(f"/api/orchestrators/{HOST}/heartbeat", {})
        r = self.http.post(f"/api/orchestrators/{HOST}/spawn", {"provider": "claude"})
        assert r.status == 202, r
        self.commands[r.json["command"]["id"]] = None

    @rule(data=st.data(), status=st.sampled_from(["done", "failed"]))
    def answer(self, data: st.DataObject, status: str) -> None:
        open_ = sorted(i for i, at in self.commands.items() if at is None)
        if not open_:
            return
        cid = data.draw(st.sampled_from(open_), label="command")
        r = self.http.post(f"/api/orchestrators/{HOST}/commands/{cid}/result", {"status": status})
        assert r.status == 200, r
        self.commands[cid] = self.clock.now

    @rule(to=st.sampled_from(AGENTS))
    def send(self, to: str) -> None:
        sender = AGENTS[1 - AGENTS.index(to)]
        r = self.http.post("/api/messages", {"from": sender, "to": to, "body": "hi"})
        assert r.status == 201, r
        self.messages[r.json["id"]] = None

    @rule(data=st.data(), verb=st.sampled_from(["claim", "ack", "delete"]))
    def settle_message(self, data: st.DataObject, verb: str) -> None:
        open_ = sorted(i for i, at in self.messages.items() if at is None)
        if not open_:
            return
        mid = data.draw(st.sampled_from(open_), label="message")
        m = self.http.get(f"/api/messages/{mid}").json
        if verb == "claim" and m["status"] == "pending":
            body = {"agentId": m["recipient"], "leaseSeconds": 3600}
            r = self.http.post(f"/api/messages/{mid}/claim", body)
            assert r.status == 200, r
        elif verb == "ack" and m["status"] == "claimed":
            r = self.http.post(f"/api/messages/{mid}/ack", {"agentId": m["recipient"]})
            assert r.status == 200, r
            self.messages[mid] = self.clock.now
        elif verb == "delete":
            r = self.http.delete(f"/api/messages/{mid}")
            assert r.status == 200, r
            self.messages[mid] = self.clock.now

    @rule(ms=st.sampled_from([1_000, KEEP_MS // 2, KEEP_MS, KEEP_MS + 1]))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def reap(self) -> None:
        r = self.http.post("/api/system/reap")
        assert r.status == 200, r
        self.last_pass_at = self.clock.now

    @rule(data=st.data())
    def late_result(self, data: st.DataObject) -> None:
        if not self.commands:
            return
        cid = data.draw(st.sampled_from(sorted(self.commands)), label="late command")
        head = self.http.log_head()
        r = self.http.post(f"/api/orchestrators/{HOST}/commands/{cid}/result", {"status": "done"})
        note(f"late result for {cid}: {r.status}")
        if self.commands[cid] is None:
            assert r.status == 200, r
            self.commands[cid] = self.clock.now
            return
        self.refused_without_a_trace(r, cid, head)

    @rule(data=st.data(), verb=st.sampled_from(["claim", "ack", "release", "delete"]))
    def late_message(self, data: st.DataObject, verb: str) -> None:
        settled = sorted(i for i, at in self.messages.items() if at is not None)
        if not settled:
            return
        mid = data.draw(st.sampled_from(settled), label="late message")
        head = self.http.log_head()
        if verb == "delete":
            r = self.http.delete(f"/api/messages/{mid}")
        else:
            r = self.http.post(f"/api/messages/{mid}/{verb}", {"agentId": "a0"})
        note(f"late {verb} of {mid}: {r.status}")
        assert r.status >= 400, r  # settled: nothing more can happen to it
        self.refused_without_a_trace(r, mid, head)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def l9_settled_past_keep_leave_memory(self) -> None:
        app = self.relay.service.app
        assert app is not None
        gone_cmds = self.forgotten(self.commands)
        gone_msgs = self.forgotten(self.messages)
        if not gone_cmds and not gone_msgs:
            return
        commands = {c["id"] for c in self.http.get(f"/api/orchestrators/{HOST}/commands").json}
        kept = self.live_orchestrator().commands
        for cid in gone_cmds:
            assert cid not in commands, f"L9: command {cid} is still in the read model"
            assert cid not in kept, f"L9: command {cid} is still in the live orchestrator"
            assert cid not in self.relay.service.rm.commands
        for mid in gone_msgs:
            assert self.http.get(f"/api/messages/{mid}").status == 404, f"L9: message {mid} still read"
            assert Message.create_id(mid) not in app.live, f"L9: message {mid} still live"

    @invariant()
    def l9_kept_for_keep_settled(self) -> None:
        """The other half of L9: a settled thing stays readable until keep-settled has
        passed (no pass at or after its settling plus keep-settled has run yet)."""
        upto = None if self.last_pass_at is None else self.last_pass_at - KEEP_MS
        young_cmds = [i for i, at in self.commands.items() if at is not None and (upto is None or at > upto)]
        if young_cmds:
            commands = {c["id"] for c in self.http.get(f"/api/orchestrators/{HOST}/commands").json}
            for cid in young_cmds:
                assert cid in commands, f"L9: command {cid} forgotten before keep-settled passed"
        for mid, at in self.messages.items():
            if at is not None and (upto is None or at > upto):
                r = self.http.get(f"/api/messages/{mid}")
                assert r.status == 200, f"L9: message {mid} forgotten before keep-settled passed"

    @invariant()
    def l10_open_things_stay(self) -> None:
        open_cmds = [i for i, at in self.commands.items() if at is None]
        if open_cmds:
            commands = {c["id"]: c for c in self.http.get(f"/api/orchestrators/{HOST}/commands").json}
            kept = self.live_orchestrator().commands
            for cid in open_cmds:
                assert cid in commands, f"L10: open command {cid} was forgotten"
                assert cid in kept, f"L10: open command {cid} left the orchestrator"
        for mid in (i for i, at in self.messages.items() if at is None):
            assert self.http.get(f"/api/messages/{mid}").status == 200, f"L10: open message {mid} forgotten"

    def check_history_and_rebuild(self) -> None:
        """L9's "still in history", and the fold from position 0 equals the live read models."""
        log = full_log(self.http)
        logged_commands = {e["data"].get("commandId") for e in log if e["type"] == "SpawnRequested"}
        logged_messages = {e["entityId"] for e in log if e["type"] == "MessageSent"}
        assert set(self.commands) <= logged_commands
        assert set(self.messages) <= logged_messages
        app = self.relay.service.app
        assert app is not None
        rebuilt = ReadModels()
        for n in app.recorder.select_notifications(start=1, limit=1_000_000):
            rebuilt.apply(n.id, app.mapper.to_domain_event(n))
        live = self.relay.service.rm
        assert rebuilt.comparable() == live.comparable()
        assert rebuilt.settled_commands == live.settled_commands
        assert rebuilt.messages.settled == live.messages.settled
        restored = ReadModels.from_state(live.to_state())
        assert restored.settled_commands == live.settled_commands
        assert restored.messages.settled == live.messages.settled


class ForgetMachineWithHistory(ForgetMachine):
    def teardown(self) -> None:
        try:
            self.check_history_and_rebuild()
        finally:
            super().teardown()


@pytest.mark.slow
def test_forget_machine() -> None:
    base = settings.default
    run_state_machine_as_test(
        ForgetMachineWithHistory,
        settings=settings(base, max_examples=max(5, base.max_examples // 4), stateful_step_count=30),
    )
