"""The reaper through a real server: a smaller state machine over HTTP.

A real ``relay serve`` child process per example, reached over a real socket,
with ``--reap-every`` an hour so that only ``POST /api/system/reap`` reaps. The
server reads the real clock, so time here is real too: ``let_time_pass``
really waits, and stale-after is short (0.4 s) to keep that cheap.

How the model judges without controlling the clock: the server stamps every
write with its receive time and shows it (``lastSeen``), and it runs on this
machine's wall clock. A reap's own ``now`` is unknown but lies between the
client's clock just before the request (``t0``) and just after the answer
(``t1``). So for each online entity the model knows a *must* (stale even at
``t0``) and a *may* (stale at ``t1``); the relay's answer has to lie between,
and the log, which records each reap's exact ``now``, is then audited with
exact times (``LogAudit``). Nothing is assumed about how long a request takes,
so a loaded machine makes the band wider, never the test flaky.

Invariants 1-7 and 9 of docs/invariants.md, read through the API only; and
issue 15's 13-17 (ADR 0019), cheaply: commands with a short deadline are
spawned on a host with room for one, started and answered; the brake is on in
the examples that draw it (``--max-reap-min 1``: two of three silent at once
suspend the reaper); an operator sometimes forces a pass. After each pass the
answer must fit the brake's rule within the band, no command may be open past
a deadline the pass saw pass, and managed agents must be ``running``,
``unknown`` or ``lost`` as their host's offline time says; ``LogAudit`` then
checks the exact times in the log (13-17).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.property.logaudit import Key, LogAudit, entry_from_api
from tests.support.client import Client
from tests.support.server import RelayProcess

STALE_S = 0.4
STALE_MS = int(STALE_S * 1000)
DEADLINE_S = 0.5  # --command-deadline
LOST_S = 0.6  # --lost-after
LOST_MS = int(LOST_S * 1000)
BRAKE_FRACTION = 0.5
OPEN = ("pending", "running")
AGENTS = ("a1", "a2")
ORCHESTRATORS = ("o1",)
ENTITY_KEYS: list[Key] = sorted(
    [("agent", a) for a in AGENTS] + [("orchestrator", o) for o in ORCHESTRATORS]
)


def wall_ms() -> int:
    """The same clock the server reads (``SystemClock``), in the same unit."""
    return time.time_ns() // 1_000_000


@dataclass
class Life:
    """An entity as the client has seen it, in the server's own times."""

    status: str  # online | offline | removed
    last_seen: int
    silence: int = 0  # longest silence any proof or reap has seen in this life (upper bound)


def path_of(key: Key) -> str:
    return f"/api/agents/{key[1]}" if key[0] == "agent" else f"/api/orchestrators/{key[1]}"


class HttpReaperMachine(RuleBasedStateMachine):
    """``relay serve`` over HTTP against a model that judges on the server's receive times."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-prop-http-"))
        self.lives: dict[Key, Life] = {}
        self.audit = LogAudit(STALE_MS, LOST_MS)
        self.revivals: list[tuple[Key, int, int]] = []  # (key, reaped at, revived at)
        self.last_reaped_at: dict[Key, int] = {}
        self.restarts = 0
        self.server: RelayProcess | None = None
        self.client: Client | None = None
        self.brake_min = 10  # the default: with three entities, the brake never bites
        self.commands: list[str] = []  # ids of the commands accepted, in order

    def _start(self) -> None:
        self.grace_lo = wall_ms()
        self.server = RelayProcess(
            self.dir / "data",
            [
                "--stale-after", str(STALE_S), "--reap-every", "3600",
                "--command-deadline", str(DEADLINE_S), "--lost-after", str(LOST_S),
                "--max-reap-fraction", str(BRAKE_FRACTION), "--max-reap-min", str(self.brake_min),
            ],
        ).start()
        self.grace_hi = wall_ms()
        self.client = Client(self.server.url)
        self.audit.started(self._head() + 1, self.grace_lo, self.grace_hi)

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing --------------------------------------------------------------------

    @property
    def http(self) -> Client:
        assert self.client is not None
        return self.client

    def _head(self) -> int:
        return self.http.log_head()

    def _sync_log(self) -> None:
        while True:
            r = self.http.get(f"/api/log?after={self.audit.position}&limit=1000")
            assert r.status == 200, r
            self.audit.feed(entry_from_api(e) for e in r.json["events"])
            if len(r.json["events"]) < 1000:
                return

    def _shown(self, key: Key) -> dict[str, Any] | None:
        r = self.http.get(path_of(key))
        assert r.status in (200, 404), r
        return r.json if r.status == 200 else None

    def _present(self, key: Key) -> Life | None:
        life = self.lives.get(key)
        return life if life is not None and life.status != "removed" else None

    def _proof(self, key: Key, was: str | None) -> None:
        """A registration or heartbeat was accepted: learn its receive time."""
        shown = self._shown(key)
        assert shown is not None and shown["status"] == "online", shown
        life = self.lives.get(key)
        if life is None or life.status == "removed":
            self.lives[key] = Life("online", shown["lastSeen"])
        else:
            life.silence = max(life.silence, shown["lastSeen"] - life.last_seen)
            life.last_seen = max(life.last_seen, shown["lastSeen"])
            life.status = "online"
        if was == "offline":
            self._sync_log()
            self.revivals.append((key, self.last_reaped_at[key], self.audit.position))

    def _bands(self, t0: int, t1: int) -> tuple[set[Key], set[Key]]:
        """Who must be reaped by a reap answered between t0 and t1, and who may be.

        Silence counts from the later of the start and the reaper's last resume
        (17), which the log gives exactly."""
        must, may = set(), set()
        hi, lo = max(self.grace_hi, self.audit.resumed_at), max(self.grace_lo, self.audit.resumed_at)
        for key, life in self.lives.items():
            if life.status != "online":
                continue
            if t0 - max(life.last_seen, hi) > STALE_MS:
                must.add(key)
            if t1 - max(life.last_seen, lo) > STALE_MS:
                may.add(key)
        return must, may

    def _over(self, would_reap: int, online: int) -> bool:
        return would_reap > self.brake_min and would_reap > BRAKE_FRACTION * online

    def _reap_answer(
        self, t0: int, t1: int, body: dict[str, Any], skip: set[Key], head: int, force: bool = False
    ) -> set[Key]:
        """Judge one pass answered between t0 and t1 that wrote the log after ``head``."""
        reaped = {("agent", a) for a in body["reapedAgentIds"]}
        reaped |= {("orchestrator", o) for o in body["reapedOrchestratorIds"]}
        must, may = self._bands(t0, t1)
        online = sum(life.status == "online" for life in self.lives.values())
        suspended_before = self.audit.suspended
        self._sync_log()
        brake = [
            e for e in self.audit.entries
            if e.position > head and e.topic in ("ReapSuspended", "ReapResumed")
        ]
        note(
            f"reap in [{t0}, {t1}] force={force}: must {sorted(must)}, may {sorted(may)}, "
            f"reaped {sorted(reaped)}, brake {[e.topic for e in brake]} "
            f"(suspended before: {suspended_before})"
        )
        if not force and (brake or suspended_before):
            # 16: a pass over the threshold, or any while suspended, reaps none; the one
            # that finds the threshold no longer crossed resumes and reaps none either.
            assert not reaped, f"invariant 16: {sorted(reaped)} reaped by a pass of a suspended reaper"
            if brake and brake[0].topic == "ReapSuspended":
                assert self._over(len(may), online), (
                    f"invariant 16: suspended although at most {len(may)} of {online} were stale"
                )
            elif not brake:  # held: still over the threshold
                assert self._over(len(may), online), (
                    f"invariant 16: held although at most {len(may)} of {online} were stale"
                )
            elif self._over(len(must - skip), online):
                raise AssertionError(f"invariant 16: resumed although {len(must)} of {online} were stale")
        else:
            # (a racing heartbeat may land before the decision: the racer is not counted)
            assert force or not self._over(len(must - skip), online), (
                f"invariant 16: {len(must)} of {online} stale at once, yet the pass was not held back"
            )
            missed = (must - skip) - reaped
            assert not missed, f"invariant 2: stale {sorted(missed)} were not reaped"
            wrong = (reaped - skip) - may
            assert not wrong, f"invariants 1 and 3: {sorted(wrong)} reaped though not stale"
        self._judge_commands_and_agents(t0, t1)
        for key in reaped:
            life = self.lives[key]
            life.status = "offline"
            life.silence = max(life.silence, t1 - life.last_seen)
            self.last_reaped_at[key] = max(
                e.position for e in self.audit.entries if e.key == key and e.topic.endswith("Reaped")
            )
        for key in may - reaped:
            # Judged alive by a reap that ran no later than t1: t1 bounds the silence
            # it saw from above, which keeps invariant 1 sound (never stricter than true).
            life = self.lives[key]
            life.silence = max(life.silence, t1 - life.last_seen)
        return reaped

    def _judge_commands_and_agents(self, t0: int, t1: int) -> None:
        """Right after a pass that ran in [t0, t1]: what it had to end is over (13), and the
        agents of an offline host are unknown or lost as its offline time says (15)."""
        for oid in ORCHESTRATORS:
            r = self.http.get(f"/api/orchestrators/{oid}/commands")
            for cmd in r.json if r.status == 200 else []:
                if cmd["status"] in OPEN:
                    assert cmd["deadlineAt"] >= t0, (
                        f"invariant 13: {cmd['id']} is {cmd['status']} after a pass at or after {t0}, "
                        f"past its deadline {cmd['deadlineAt']}"
                    )
        for o in self.http.get("/api/orchestrators").json:
            for m in o["managedAgents"]:
                if o["status"] == "online":
                    assert m["state"] == "running", f"invariant 15: {m} on online {o['id']}"
                    continue
                since = o["offlineSince"]
                if t0 - since > LOST_MS:
                    assert m["state"] == "lost", (
                        f"invariant 15: {m['agentId']} is {m['state']} after a pass {t0 - since} ms "
                        f"or more after {o['id']} went offline (lost-after {LOST_MS})"
                    )
                elif t1 - since <= LOST_MS:
                    assert m["state"] == "unknown", (
                        f"invariant 15: {m['agentId']} is {m['state']} {t1 - since} ms or less after "
                        f"{o['id']} went offline (lost-after {LOST_MS})"
                    )

    # -- rules -----------------------------------------------------------------------

    @initialize(brake=st.booleans())
    def everyone_registers(self, brake: bool) -> None:
        """Start with the whole cast online, so that short examples still reap something; then
        tell issue 15's story once."""
        if brake:
            self.brake_min = 1
        self._start()
        for oid in ORCHESTRATORS:
            self.register_orchestrator(oid)
        for aid in AGENTS:
            self.register_agent(aid)
        note(f"brake: more than {BRAKE_FRACTION} of the online and more than {self.brake_min}")
        self.lifecycle_story()

    @rule(aid=st.sampled_from(AGENTS))
    def register_agent(self, aid: str) -> None:
        key = ("agent", aid)
        was = self.lives[key].status if key in self.lives else None
        r = self.http.post("/api/agents", json={"id": aid, "tags": ["prop"]})
        assert r.status == 201, r
        self._proof(key, was)

    @rule(oid=st.sampled_from(ORCHESTRATORS))
    def register_orchestrator(self, oid: str) -> None:
        key = ("orchestrator", oid)
        was = self.lives[key].status if key in self.lives else None
        r = self.http.post(
            "/api/orchestrators", json={"id": oid, "hostname": oid, "baseDir": "/srv", "maxAgents": 2}
        )
        assert r.status == 201, r
        self._proof(key, was)

    @rule(key=st.sampled_from(ENTITY_KEYS), as_agent=st.booleans())
    def heartbeat(self, key: Key, as_agent: bool) -> None:
        """Orchestrators heartbeat on their own path or on their agent record's."""
        url = f"{path_of(key)}/heartbeat"
        if key[0] == "orchestrator" and as_agent:
            url = f"/api/agents/orchestrator-{key[1]}/heartbeat"
        life = self._present(key)
        head = self._head()
        r = self.http.post(url)
        if life is None:
            assert r.status == 404, f"invariant 7: heartbeat of removed/unknown {key} gave {r}"
            assert self._head() == head, "invariant 7: a refused heartbeat appended to the log"
            return
        assert r.status == 200, r
        self._proof(key, life.status)

    @rule(oid=st.sampled_from(ORCHESTRATORS))
    def report_agents(self, oid: str) -> None:
        key = ("orchestrator", oid)
        body = {"agents": [{"agentId": "m1", "provider": "claude", "tmuxSession": "relay-m1"}]}
        head = self._head()
        r = self.http.patch(f"/api/orchestrators/{oid}/agents", json=body)
        if self._present(key) is None:
            assert r.status == 404 and self._head() == head, f"invariant 7: report to removed gave {r}"
        else:
            assert r.status == 200, r

    @rule(key=st.sampled_from(ENTITY_KEYS))
    def remove(self, key: Key) -> None:
        r = self.http.delete(path_of(key))
        if self._present(key) is None:
            assert r.status == 404, r
            return
        assert r.status == 200, r
        self.lives[key].status = "removed"

    @rule(ms=st.sampled_from([STALE_MS // 4, STALE_MS + 150]))
    def let_time_pass(self, ms: int) -> None:
        """The server's clock is the wall clock: waiting is how its time moves."""
        time.sleep(ms / 1000)

    @rule(key=st.sampled_from(ENTITY_KEYS), margin=st.sampled_from([-STALE_MS // 2, 30, 100]))
    def wait_for_silence_then_reap(self, key: Key, margin: int) -> None:
        """Let one entity go quiet until ``margin`` ms past its stale-after, then reap.

        Draws never depend on what the server did (which entity is online can
        hang on timing), or Hypothesis could not replay an example.
        """
        life = self._present(key)
        if life is not None:
            until = max(life.last_seen, self.grace_hi) + STALE_MS + margin
            pause = until - wall_ms()
            if pause > 0:
                time.sleep(pause / 1000)
        self.reap()

    @rule()
    def reap(self) -> None:
        head = self._head()
        t0 = wall_ms()
        r = self.http.post("/api/system/reap")
        t1 = wall_ms()
        assert r.status == 200, r
        self._reap_answer(t0, t1, r.json, set(), head)
        # Invariant 4, through the API: at once again, nobody is reaped twice.
        head = self._head()
        t0 = wall_ms()
        again = self.http.post("/api/system/reap")
        t1 = wall_ms()
        self._reap_answer(t0, t1, again.json, set(), head)

    @rule()
    def force_reap(self) -> None:
        """An operator forces one pass: whatever the brake says, the stale are reaped."""
        head = self._head()
        t0 = wall_ms()
        r = self.http.post("/api/system/reap?force=true")
        t1 = wall_ms()
        assert r.status == 200, r
        self.audit.forced(head, self._head())  # before the audit reads the pass (16)
        self._reap_answer(t0, t1, r.json, set(), head, force=True)

    @rule(oid=st.sampled_from(ORCHESTRATORS))
    def spawn(self, oid: str) -> None:
        """A host with room for two: a spawn when its agents and open spawns fill it is 409 (14)."""
        life = self._present(("orchestrator", oid))
        busy = 0
        if life is not None:
            host = self.http.get(f"/api/orchestrators/{oid}").json
            cmds = self.http.get(f"/api/orchestrators/{oid}/commands").json
            busy = host["activeAgents"] + sum(c["kind"] == "spawn" and c["status"] in OPEN for c in cmds)
        head = self._head()
        r = self.http.post(f"/api/orchestrators/{oid}/spawn", json={"provider": "claude"})
        if life is None:
            assert r.status == 404, r
        elif busy >= 2:
            assert r.status == 409, f"invariant 14: {oid} is full ({busy} of 2), yet {r}"
        else:
            assert r.status in (202, 409), r  # 409 when offline or silent by now
        if r.status != 202:
            assert self._head() == head, f"a refused spawn appended to the log: {r}"
            return
        self.commands.append(r.json["command"]["id"])

    @precondition(lambda self: bool(self.commands))
    @rule(index=st.integers(0, 3), what=st.sampled_from(["progress", "done"]))
    def answer_command(self, index: int, what: str) -> None:
        """The host starts or answers a command; the log audit judges each against 12 and 13."""
        cid = self.commands[-1 - index % len(self.commands)]  # drawn from a fixed list
        base = f"/api/orchestrators/{ORCHESTRATORS[0]}/commands/{cid}"
        if what == "progress":
            r = self.http.post(base + "/progress", json={"status": "running"})
        else:
            r = self.http.post(base + "/result", json={"status": "done"})
        assert r.status in (200, 404, 409), r

    @rule(key=st.sampled_from(ENTITY_KEYS))
    def heartbeat_races_reap(self, key: Key) -> None:
        """Once ``key`` is stale, a heartbeat and a reap in flight at once, on two connections."""
        life = self._present(key)
        if life is None:
            return
        pause = max(life.last_seen, self.grace_hi) + STALE_MS + 30 - wall_ms()
        if pause > 0:
            time.sleep(pause / 1000)
        assert self.server is not None
        answers: dict[str, Any] = {}
        racer = Client(self.server.url)

        def beat() -> None:
            answers["heartbeat"] = racer.post(f"{path_of(key)}/heartbeat")

        thread = threading.Thread(target=beat)
        head = self._head()
        t0 = wall_ms()
        thread.start()
        r = self.http.post("/api/system/reap")
        thread.join(30)
        t1 = wall_ms()
        racer.close()
        assert r.status == 200 and answers["heartbeat"].status == 200, (r, answers)
        self._reap_answer(t0, t1, r.json, {key}, head)
        self._sync_log()
        beat_at = max(
            e.position for e in self.audit.entries if e.key == key and e.meaning in ("heartbeat",)
        )
        # (a pass may still end the host's commands after it; it must not reap it or lose its agents)
        later = [
            e.position
            for e in self.audit.entries
            if e.key == key and e.position > beat_at and e.meaning in ("reaped", "lost")
        ]
        assert not later, f"invariant 5: {key} was reaped after its racing heartbeat: {later}"
        reaped_first = self.lives[key].status == "offline"  # the reap committed first
        self._proof(key, self.lives[key].status)
        note(f"race on {key}: heartbeat at position {beat_at}, reaped first: {reaped_first}")

    def _all_silent(self, margin: int = 30) -> None:
        """Wait until every present entity is past stale-after (counting the latest grace)."""
        hi = max(self.grace_hi, self.audit.resumed_at)
        lasts = [max(life.last_seen, hi) for life in self.lives.values() if life.status == "online"]
        if lasts:
            pause = max(lasts) + STALE_MS + margin - wall_ms()
            if pause > 0:
                time.sleep(pause / 1000)

    def _beat_agents(self) -> None:
        for aid in AGENTS:
            self.heartbeat(("agent", aid), False)

    def lifecycle_story(self) -> None:
        """Issue 15 in about a second of real time, told once per example (not as a rule, so
        that CI pays for its waiting once): a host with room for two takes three spawns (the
        third is 409: 14) and starts one; it reports an agent; everyone falls silent past the
        commands' deadline (13: a pass ends them, also while the brake holds: 16); the agents
        come back (a resume when the brake is on) and, within the fresh grace, the silent host
        is not reaped (17); once it has been offline for longer than lost-after, its agent is
        lost (15). Every pass is judged within its band and the log exactly."""
        oid = ORCHESTRATORS[0]
        self.heartbeat(("orchestrator", oid), False)
        for _ in range(3):
            self.spawn(oid)
        if self.commands:
            self.answer_command(0, "progress")
        self.report_agents(oid)
        deadline_passed = wall_ms() + int(DEADLINE_S * 1000) + 50
        self._all_silent()
        pause = deadline_passed - wall_ms()
        if pause > 0:
            time.sleep(pause / 1000)
        self.reap()  # brake on: suspended (then held); off: everyone reaped
        self._beat_agents()
        self.reap()  # brake on: one of three stale, a resume
        time.sleep(STALE_MS / 2 / 1000)
        self._beat_agents()
        self.reap()  # within the fresh grace: the host is not reaped yet
        host = self.lives[("orchestrator", oid)]
        if host.status == "offline":
            since = self.http.get(f"/api/orchestrators/{oid}").json["offlineSince"]
            pause = since + LOST_MS + 50 - wall_ms()
            if pause > 0:
                time.sleep(pause / 1000)
            self._beat_agents()
            self.reap()  # its agent is lost now

    @precondition(lambda self: self.restarts < 1)
    @rule()
    def restart(self) -> None:
        """SIGTERM and start again on the same data: nothing learned is lost."""
        self._sync_log()
        assert self.client is not None and self.server is not None
        self.client.close()
        assert self.server.stop() == 0
        self.restarts += 1
        self._start()

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def inv01_no_false_positive(self) -> None:
        self._sync_log()
        for key, life in self.lives.items():
            if life.status != "removed" and life.silence <= STALE_MS:
                assert self.audit.facts[key].reaps_in_life == 0, f"{key} reaped, silence {life.silence}"

    @invariant()
    def inv03_05_log_rules(self) -> None:
        self._sync_log()
        for n in (0, 3, 4, 5, 12):
            assert not self.audit.violations[n], (n, self.audit.violations[n])

    @invariant()
    def inv13_17_log_rules(self) -> None:
        """Issue 15 from the log, exact times: 13 deadlines, 14 capacity, 15 lost only after
        lost-after, 16 no reap while suspended unless forced, 17 the fresh grace."""
        self._sync_log()
        for n in (13, 14, 15, 16, 17):
            assert not self.audit.violations[n], (n, self.audit.violations[n])

    @invariant()
    def inv06_heartbeat_after_reap_revives(self) -> None:
        for key, reaped_at, revived_at in self.revivals:
            r = self.http.get(f"/api/log?after={reaped_at - 1}&limit=1")
            assert r.json["events"][0]["type"].endswith("Reaped"), r.json
            assert r.json["events"][0]["entityId"] == key[1]
            r = self.http.get(f"/api/log?after={reaped_at}&limit=1000")
            since = [
                e["type"]
                for e in r.json["events"]
                if e["entityId"] == key[1] and e["position"] <= revived_at
            ]
            proofs = ("HeartbeatReceived", "Registered", "Reregistered")
            assert any(t.endswith(proofs) for t in since), f"{key}: no revival after its reap: {since}"
            assert not any(t.endswith(("Reaped", "Removed")) for t in since), since

    @invariant()
    def inv07_removed_stays_removed(self) -> None:
        self._sync_log()
        assert not self.audit.violations[7], self.audit.violations[7]
        agents = {a["id"] for a in self.http.get("/api/agents").json}
        orchestrators = {o["id"] for o in self.http.get("/api/orchestrators").json}
        for key, life in self.lives.items():
            if life.status == "removed":
                assert self._shown(key) is None, f"removed {key} is back"
                listed = agents if key[0] == "agent" else orchestrators
                assert key[1] not in listed, f"removed {key} is listed"
                if key[0] == "orchestrator":
                    assert f"orchestrator-{key[1]}" not in agents, f"removed {key}'s agent record is listed"

    @invariant()
    def inv09_offline_only_by_reap(self) -> None:
        self._sync_log()
        shown: dict[Key, str] = {}
        for a in self.http.get("/api/agents").json:
            if not a["id"].startswith("orchestrator-"):
                shown[("agent", a["id"])] = a["status"]
        for o in self.http.get("/api/orchestrators").json:
            shown[("orchestrator", o["id"])] = o["status"]
            mirror = self.http.get(f"/api/agents/{o['agentId']}").json
            assert mirror["status"] == o["status"], (o, mirror)
        for key in ENTITY_KEYS:
            facts = self.audit.facts.get(key)
            derived = facts.status if facts else "removed"
            assert shown.get(key, "removed") == derived, f"{key}: API {shown.get(key)}, log {derived}"
            if derived == "offline":
                assert facts is not None and facts.last_status_topic.endswith("Reaped")
            life = self.lives.get(key)
            assert (life.status if life else "removed") == derived, f"{key}: model {life}, log {derived}"


@pytest.mark.slow
def test_reaper_over_http() -> None:
    """Fewer, slower examples than the in-process machine: each one is a real server."""
    base = settings.default
    run_state_machine_as_test(
        HttpReaperMachine,
        settings=settings(
            base,
            max_examples=max(3, base.max_examples // 12),
            stateful_step_count=min(25, base.stateful_step_count),
        ),
    )
