"""Truthful fleet state as a state machine over HTTP, with a clock the machine holds.

The relay runs in this process on a real socket (tests/property/inprocess.py)
with a ``FakeClock``: hosts heartbeat (or fall silent), spawns are placed,
commands are started and answered, time jumps, and the reaper runs, sometimes
forced. After each step the invariants of issue 15 are checked through the API
and the raw log (docs/invariants.md, 13-17):

13. every command is terminal once a reap pass has run past its deadline;
14. placement never goes over capacity, never to a host that does not fit,
    and always to the least loaded one that does;
15. a managed agent is ``unknown`` only while its host is offline and within
    lost-after, ``lost`` only after that, ``running`` only on an online host;
16. nothing is reaped while the reaper is suspended (unless forced);
17. after a resume nothing is reaped before a fresh stale-after has passed.
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
from tests.http.helpers import full_log, managed
from tests.property.inprocess import InProcessRelay
from tests.support.client import Client

STALE_MS = 90_000
LOST_MS = 200_000
DEADLINE_S = 120
HOSTS = ("h0", "h1", "h2", "h3", "h4")
ZONES = ("x", "y")
OPEN = ("pending", "running")


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-prop-life-"))
        self.clock = FakeClock()
        self.relay = InProcessRelay(
            self.dir / "data",
            self.clock,
            stale_after=STALE_MS / 1000,
            reap_every=3600.0,
            command_deadline=float(DEADLINE_S),
            lost_after=LOST_MS / 1000,
            max_reap_fraction=0.5,
            max_reap_min=2,
        ).start()
        self.http = Client(self.relay.url)
        self.forced_positions: list[tuple[int, int]] = []  # (after, upto) log ranges of forced passes
        self.last_pass_at: int | None = None

    def teardown(self) -> None:
        self.http.close()
        self.relay.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {o["id"]: o for o in self.http.get("/api/orchestrators").json}

    def commands(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for oid in HOSTS:
            r = self.http.get(f"/api/orchestrators/{oid}/commands")
            if r.status == 200:
                out.extend(r.json)
        return out

    def resumed_at(self) -> int:
        resumed = [e["data"]["at"] for e in full_log(self.http) if e["type"] == "ReapResumed"]
        return max(resumed, default=0)

    def busy(self, oid: str, cmds: list[dict[str, Any]], host: dict[str, Any]) -> int:
        spawns = sum(
            1 for c in cmds if c["orchestratorId"] == oid and c["kind"] == "spawn" and c["status"] in OPEN
        )
        return host["activeAgents"] + spawns

    # -- rules ------------------------------------------------------------------------

    @initialize(caps=st.lists(st.integers(1, 3), min_size=len(HOSTS), max_size=len(HOSTS)))
    def register_all(self, caps: list[int]) -> None:
        for i, (oid, cap) in enumerate(zip(HOSTS, caps, strict=True)):
            r = self.http.post(
                "/api/orchestrators",
                {"id": oid, "hostname": f"host-{i % 3}", "baseDir": "/srv", "maxAgents": cap,
                 "labels": {"zone": ZONES[i % 2]}},
            )
            assert r.status == 201, r

    @rule(oid=st.sampled_from(HOSTS), load=st.one_of(st.none(), st.integers(0, 3)))
    def heartbeat(self, oid: str, load: int | None) -> None:
        body = {} if load is None else {"load": {"activeAgents": load}}
        r = self.http.post(f"/api/orchestrators/{oid}/heartbeat", body)
        assert r.status == 200, r

    @rule(oid=st.sampled_from(HOSTS), n=st.integers(0, 2))
    def report(self, oid: str, n: int) -> None:
        agents = [managed(f"{oid}-m{i}", cwd="/srv") for i in range(n)]
        r = self.http.patch(f"/api/orchestrators/{oid}/agents", {"agents": agents})
        assert r.status == 200, r

    @rule(zone=st.one_of(st.none(), st.sampled_from(ZONES)), deadline=st.sampled_from([None, 30, DEADLINE_S]))
    def spawn_anywhere(self, zone: str | None, deadline: int | None) -> None:
        """Invariant 14: the host placement picks fits, has room, and is the least loaded."""
        hosts, cmds = self.hosts(), self.commands()
        now = self.clock.now
        body: dict[str, Any] = {"provider": "claude"}
        if zone is not None:
            body["selector"] = {"zone": zone}
        if deadline is not None:
            body["deadlineSeconds"] = deadline
        grace = self.resumed_at()  # silence before a resume never counts (ADR 0019)
        fits = {
            oid: self.busy(oid, cmds, h)
            for oid, h in hosts.items()
            if h["status"] == "online"
            and now - max(h["lastSeen"], grace) <= STALE_MS
            and (zone is None or h["labels"].get("zone") == zone)
            and self.busy(oid, cmds, h) < h["maxAgents"]
        }
        r = self.http.post("/api/agents/spawn", body)
        if not fits:
            assert r.status == 409, f"no host fits, yet {r}"
            return
        assert r.status == 202, f"{sorted(fits)} fit, yet {r}"
        chosen = r.json["orchestratorId"]
        assert chosen in fits, f"invariant 14: placed on {chosen}, which does not fit ({fits})"
        assert fits[chosen] == min(fits.values()), f"invariant 14: {chosen} is not the least loaded: {fits}"
        note(f"spawn {body} -> {chosen} (fits {fits})")

    @rule(oid=st.sampled_from(HOSTS))
    def spawn_named(self, oid: str) -> None:
        """Invariant 14 for a named host: refused when it is full (pending spawns included)."""
        host = self.hosts()[oid]
        busy = self.busy(oid, self.commands(), host)
        r = self.http.post(f"/api/orchestrators/{oid}/spawn", {"provider": "claude"})
        if host["status"] == "online" and busy >= host["maxAgents"]:
            assert r.status == 409, f"invariant 14: {oid} is full ({busy} of {host['maxAgents']}), yet {r}"
        elif host["status"] == "online" and self.clock.now - max(
            host["lastSeen"], self.resumed_at()
        ) <= STALE_MS:
            assert r.status == 202, f"{oid} has room ({busy} of {host['maxAgents']}), yet {r}"

    @rule(data=st.data())
    def start_or_answer(self, data: st.DataObject) -> None:
        cmds = sorted((c for c in self.commands() if c["status"] in OPEN), key=lambda c: c["id"])
        if not cmds:
            return
        cmd = data.draw(st.sampled_from(cmds), label="command")
        what = data.draw(st.sampled_from(["progress", "done"]), label="what")
        base = f"/api/orchestrators/{cmd['orchestratorId']}/commands/{cmd['id']}"
        if what == "progress":
            r = self.http.post(base + "/progress", {"status": "running"})
            late = cmd["deadlineAt"] is not None and self.clock.now > cmd["deadlineAt"]
            assert r.status == (409 if late and cmd["status"] == "pending" else 200), (cmd, r)
        else:
            r = self.http.post(base + "/result", {"status": "done"})
            assert r.status == 200, r

    @rule(ms=st.sampled_from([1_000, 29_000, STALE_MS // 2, STALE_MS + 1, LOST_MS]))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(kept=st.integers(0, 2), back=st.integers(2, 4))
    def outage_and_return(self, kept: int, back: int) -> None:
        """Most hosts fall silent at once (the reaper must hold), then most come back."""
        self.clock.advance(STALE_MS + 1)
        for oid in HOSTS[:kept]:
            self.heartbeat(oid, None)
        self.reap(False)
        self.clock.advance(1_000)
        for oid in HOSTS[:back]:
            self.heartbeat(oid, None)
        self.reap(False)  # under the threshold again: resumes, a fresh grace starts
        self.clock.advance(STALE_MS // 2)
        for oid in HOSTS[:back]:
            self.heartbeat(oid, None)
        self.reap(False)  # within the grace: the hosts still silent must not be reaped

    @rule(force=st.booleans())
    def reap(self, force: bool) -> None:
        before = self.http.log_head()
        r = self.http.post("/api/system/reap" + ("?force=true" if force else ""))
        assert r.status == 200, r
        self.last_pass_at = self.clock.now
        if force:
            self.forced_positions.append((before, self.http.log_head()))
        note(f"reap at {self.clock.now} force={force}: {r.json}")

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def inv13_commands_end_by_their_deadline(self) -> None:
        if self.last_pass_at is None:
            return
        for c in self.commands():
            if c["status"] in OPEN and c["deadlineAt"] is not None:
                assert c["deadlineAt"] >= self.last_pass_at, (
                    f"invariant 13: {c['id']} is {c['status']} although a pass at "
                    f"{self.last_pass_at} ran past its deadline {c['deadlineAt']}"
                )

    @invariant()
    def inv14_never_over_capacity_at_a_spawn(self) -> None:
        """Replayed from the log: at each SpawnRequested the host had room."""
        taken: dict[str, set[str]] = {}
        reported: dict[str, int] = {}
        load: dict[str, int | None] = {}  # the last heartbeat's load.activeAgents (None: not given)
        cap: dict[str, int | None] = {}
        for e in full_log(self.http):
            oid, d = e["entityId"], e["data"]
            t = e["type"]
            if t == "OrchestratorCapacityDeclared":
                cap[oid] = d["maxAgents"]
            elif t == "ManagedAgentsReported":
                reported[oid] = len(d["agents"])
            elif t == "OrchestratorHeartbeatReceived":
                load[oid] = (d.get("load") or {}).get("activeAgents")
            elif t == "SpawnRequested":
                active = load.get(oid)
                busy = (reported.get(oid, 0) if active is None else active) + len(taken.get(oid, set()))
                assert cap.get(oid) is None or busy < cap[oid], (
                    f"invariant 14: spawn at {e['position']} on {oid} with {busy} of {cap[oid]}"
                )
                taken.setdefault(oid, set()).add(d["commandId"])
            elif t in ("CommandResultRecorded", "CommandExpired"):
                for s in taken.values():
                    s.discard(d["commandId"])

    @invariant()
    def inv15_agent_states_follow_their_host(self) -> None:
        """``unknown`` is judged right after a pass (between passes time may run past lost-after)."""
        just_passed = self.last_pass_at == self.clock.now
        for o in self.hosts().values():
            for m in o["managedAgents"]:
                if o["status"] == "online":
                    assert m["state"] == "running", f"invariant 15: {m} on online {o['id']}"
                    continue
                silent = self.clock.now - o["offlineSince"]
                if m["state"] == "unknown":
                    assert not just_passed or silent <= LOST_MS, (
                        f"invariant 15: {m['agentId']} still unknown {silent} ms after its host "
                        f"went offline (lost-after {LOST_MS})"
                    )
                else:
                    assert m["state"] == "lost", f"invariant 15: {m} on offline {o['id']}"
                    assert silent > LOST_MS, f"invariant 15: {m['agentId']} lost after {silent} ms"

    @invariant()
    def inv16_17_no_reap_while_suspended_or_within_a_fresh_grace(self) -> None:
        suspended = False
        resumed_at = 0
        for e in full_log(self.http):
            t = e["type"]
            if t == "ReapSuspended":
                suspended = True
            elif t == "ReapResumed":
                suspended, resumed_at = False, e["data"]["at"]
            elif t in ("OrchestratorReaped", "AgentReaped"):
                forced = any(lo < e["position"] <= hi for lo, hi in self.forced_positions)
                if forced:
                    continue
                assert not suspended, (
                    f"invariant 16: {e['entityId']} reaped at {e['position']} while suspended"
                )
                assert e["at"] - resumed_at > STALE_MS or resumed_at == 0, (
                    f"invariant 17: {e['entityId']} reaped {e['at'] - resumed_at} ms after the resume"
                )


@pytest.mark.slow
def test_lifecycle_machine() -> None:
    base = settings.default
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(base, max_examples=max(5, base.max_examples // 4), stateful_step_count=30),
    )
