"""The reaper, the domain and the read models as one state machine, on a fake clock.

Drives ``RelayApp`` the way the writer thread does (``execute``, ``save``, fold
each recording into the read models) on a real SQLite file, with time as data:
a ``FakeClock`` that only rules move, so nothing sleeps and "exactly
stale-after" is as reachable as any other moment. The reaper's decision is the
service's own (``relay.service.reap_candidates``), run on the schedule (every
reap-every, inside ``advance_clock``, as the service's loop does), on demand
(``reap``, as ``POST /api/system/reap`` does), and with another write landing
between its decision and its write (``reap_overtaken``, the race of
invariant 5). ``restart`` reopens the store with a new application and loads
the read models the three ways a relay can (rebuild, fresh checkpoint, old
checkpoint plus tail), with a new grace period.

Beside it runs ``Model``: the contract's rules written plainly, from API.md and
the issue, not from the code. The invariants (numbered as in
docs/invariants.md) compare the relay with the model, and the log with itself
through ``LogAudit``.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from relay import commands as c
from relay.application import RelayApp
from relay.clock import FakeClock
from relay.config import Settings
from relay.domain.agent import Agent
from relay.domain.errors import ConflictError, InvalidInputError, NotFoundError, RelayError
from relay.domain.orchestrator import Orchestrator
from relay.domain.rules import ACTIONS, PROVIDERS, RESULT_STATUSES, orchestrator_agent_id
from relay.projections.follower import TailFollower, catch_up, load_read_models
from relay.projections.readmodels import ReadModels
from relay.service import reap_candidates
from relay.store import store_env
from tests.property.logaudit import Entry, Key, LogAudit

STALE_MS = 9_000  # a multiple of REAP_EVERY_MS: scheduled runs land exactly on the boundary
REAP_EVERY_MS = 3_000
T0 = 1_700_000_000_000  # far from the wall clock: a clock read in a fold would show

# A real SQLite file, on tmpfs where there is one: these examples test logic, not
# durability, and thousands of fsyncs would make the run wait on the disk.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None

ORCHESTRATORS = ("o1", "o2")
AGENTS = ("a1", "a2", "a3")
ENTITY_KEYS: list[Key] = sorted(
    [("agent", a) for a in AGENTS] + [("orchestrator", o) for o in ORCHESTRATORS]
)
HOSTS = ("alpha", "beta")
PROVIDER_SETS = (("claude",), ("claude", "codex"), ("codex",))
MANAGED = ("m1", "m2", "m3")
RACES = ("heartbeat", "heartbeat-same-ms", "register", "report", "remove")
HEARTBEAT_RACES = frozenset({"heartbeat", "heartbeat-same-ms", "register"})
PROOF_TOPICS = ("Registered", "Reregistered", "HeartbeatReceived")  # topic suffixes

DURATIONS = st.one_of(
    st.sampled_from([1, REAP_EVERY_MS, STALE_MS - 1, STALE_MS, STALE_MS + 1]),
    st.integers(1, STALE_MS + 2 * REAP_EVERY_MS),
)


# -- the plain model -----------------------------------------------------------------


@dataclass
class Life:
    """One registration-to-removal life of an entity, as the contract describes it."""

    kind: str
    status: str  # online | offline | removed
    last_seen: int  # newest receive time of a registration or heartbeat
    max_gap: int = 0  # longest silence between two proofs of life in this life
    hostname: str = ""
    providers: tuple[str, ...] = ()
    managed: tuple[str, ...] = ()
    commands: dict[str, str] = field(default_factory=dict)


class Model:
    """What the relay must know, kept the simplest way that could work."""

    def __init__(self) -> None:
        self.lives: dict[Key, Life] = {}

    def present(self, key: Key) -> Life | None:
        life = self.lives.get(key)
        return life if life is not None and life.status != "removed" else None

    def status(self, key: Key) -> str | None:
        life = self.lives.get(key)
        return life.status if life else None

    def register(self, key: Key, at: int, hostname: str = "", providers: tuple[str, ...] = ()) -> None:
        life = self.present(key)
        if life is None:
            self.lives[key] = Life(key[0], "online", at, hostname=hostname, providers=providers)
            return
        self.heartbeat(key, at)
        life.hostname, life.providers = hostname, providers

    def heartbeat(self, key: Key, at: int) -> None:
        life = self.lives[key]
        life.max_gap = max(life.max_gap, at - life.last_seen)
        life.last_seen = max(life.last_seen, at)
        life.status = "online"

    def remove(self, key: Key) -> None:
        life = self.lives[key]
        life.status = "removed"
        life.managed = ()
        life.commands = {}

    def stale(self, now: int, grace: int) -> set[Key]:
        """Online, and silent for more than stale-after, never counting before ``grace``."""
        return {
            k
            for k, life in self.lives.items()
            if life.status == "online" and now - max(life.last_seen, grace) > STALE_MS
        }


@dataclass
class ReapObs:
    """One reaper run, with what the invariants need to judge it afterwards."""

    why: str
    now: int
    grace: int
    decided_at: int  # read-model position the decision was made at
    candidates: set[Key]
    expected: set[Key]  # the model's stale set at the decision
    overtaken: set[Key]  # written to between decision and write
    racing: str | None
    reaped: set[Key]
    positions: dict[Key, int]  # where each Reaped event landed
    rm_before: dict[str, Any]
    rm_after: dict[str, Any]
    aggs_before: dict[Key, dict[str, Any]]
    aggs_after: dict[Key, dict[str, Any]]
    status_after: dict[Key, str | None]
    second: list[Key] | None  # what a second run at the same now touched


def public_state(agg: Any) -> dict[str, Any]:
    """An aggregate's own fields (not the library's bookkeeping)."""
    return {k: copy.deepcopy(v) for k, v in vars(agg).items() if not k.startswith("_")}


def aggregate_id(key: Key) -> UUID:
    return Agent.create_id(key[1]) if key[0] == "agent" else Orchestrator.create_id(key[1])


NAMES: dict[UUID, Key] = {aggregate_id(k): k for k in ENTITY_KEYS}


def name_of(event: Any) -> Key:
    """(kind, id) of an event's entity; messages and log seals are named by their uuid."""
    key = NAMES.get(event.originator_id)
    if key is not None:
        return key
    kind = "message" if type(event).TOPIC.startswith("Message") else "other"
    return (kind, str(event.originator_id))


# -- the machine ---------------------------------------------------------------------


class ReaperMachine(RuleBasedStateMachine):
    """The relay's write path with a fake clock, against ``Model`` and ``LogAudit``."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-prop-", dir=SCRATCH))
        self.env = store_env(Settings(data_dir=self.dir))
        self.clock = FakeClock(T0)
        self.app = RelayApp(self.env)
        self.rm, _ = load_read_models(self.app, None)
        self.grace = self.clock.now_ms()
        self.next_tick = self.grace + REAP_EVERY_MS
        self.model = Model()
        self.audit = LogAudit(STALE_MS)
        self.audit.started(1, self.grace)
        self.reaps: list[ReapObs] = []
        self.cursors: dict[str, int] = defaultdict(int)
        self.last_reaped_at: dict[Key, int] = {}
        self.revivals: list[tuple[Key, int, int, str | None]] = []
        self.issued: dict[str, str] = {}  # every command id ever requested -> orchestrator
        self.command_seq = 0

    def teardown(self) -> None:
        self.app.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing --------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.clock.now_ms()

    def _t(self, ms: int) -> str:
        return f"T0+{ms - T0}"

    def _head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def _run(self, cmd: c.Command) -> tuple[Any, list[Any]]:
        """What the writer does for one command: decide, save, fold into the read models."""
        result, aggs = self.app.execute(cmd)
        recordings = self.app.save(*aggs) if aggs else []
        for r in recordings:
            self.rm.apply(r.notification.id, r.domain_event)
        return result, recordings

    def _refused(self, cmd: c.Command, error: type[RelayError]) -> None:
        """The command must be refused with ``error`` and append nothing to the log."""
        head = self._head()
        try:
            self.app.execute(cmd)
        except RelayError as e:
            assert type(e) is error, f"{cmd} refused with {e!r}, expected {error.__name__}"
        else:
            raise AssertionError(f"{cmd} was accepted; the model expected {error.__name__}")
        assert self._head() == head, f"a refused {type(cmd).__name__} appended to the log"

    def _sync_log(self) -> None:
        """Feed the audit whatever the store holds past what it has seen."""
        notes = self.app.recorder.select_notifications(
            start=self.audit.position, limit=1_000_000, inclusive_of_start=False
        )
        entries = []
        for n in notes:
            ev = self.app.mapper.to_domain_event(n)
            kind, eid = name_of(ev)
            entries.append(
                Entry(
                    position=n.id,
                    topic=type(ev).TOPIC,
                    kind=kind,
                    entity_id=eid,
                    at=ev.at,
                    last_seen=getattr(ev, "last_seen", None),
                    command_id=getattr(ev, "command_id", None),
                    result_status=getattr(ev, "status", None),
                )
            )
        self.audit.feed(entries)

    def _fresh(self, name: str) -> list[ReapObs]:
        """Reaper runs that invariant ``name`` has not judged yet."""
        start = self.cursors[name]
        self.cursors[name] = len(self.reaps)
        return self.reaps[start:]

    def _live(self, key: Key) -> Any | None:
        try:
            return self.app.agent(key[1]) if key[0] == "agent" else self.app.orchestrator(key[1])
        except NotFoundError:
            return None

    def _aggregate_states(self) -> dict[Key, dict[str, Any]]:
        out = {}
        for key in ENTITY_KEYS:
            agg = self._live(key)
            if agg is not None:
                out[key] = public_state(agg)
        return out

    def _rm_status(self, key: Key) -> str | None:
        table = self.rm.agents if key[0] == "agent" else self.rm.orchestrators
        row = table.get(key[1])
        return row["status"] if row else None

    def _cmd_heartbeat(self, key: Key, at: int) -> c.Command:
        if key[0] == "agent":
            return c.HeartbeatAgent(key[1], at)
        return c.HeartbeatOrchestrator(key[1], at)

    def _cmd_register(self, key: Key, at: int, hostname: str, providers: tuple[str, ...]) -> c.Command:
        if key[0] == "agent":
            return c.RegisterAgent(key[1], key[1], None, [], None, [], {}, at)
        return c.RegisterOrchestrator(
            key[1], hostname, f"/srv/{key[1]}", list(providers), ["HOME"], {}, "0" * 64, at
        )

    def _proof(self, key: Key, recordings: list[Any], was: str | None) -> None:
        """A registration or heartbeat landed; remember a revival after a reap (6)."""
        if was == "offline":
            self.revivals.append(
                (key, self.last_reaped_at[key], recordings[-1].notification.id, self._rm_status(key))
            )

    def _new_command_id(self) -> str:
        self.command_seq += 1
        return f"cmd-{self.command_seq}"

    # -- the reaper ------------------------------------------------------------------

    def _decide(self) -> list[c.ReapCandidate]:
        return reap_candidates(self.rm, self.now, STALE_MS, self.grace)

    def _reap(
        self,
        why: str,
        overtake: Callable[[list[c.ReapCandidate]], tuple[set[Key], str]] | None = None,
    ) -> None:
        """One run of the reaper, exactly as ``RelayService.reap`` sequences it."""
        now, grace = self.now, self.grace
        decided_at = self.rm.position
        candidates = self._decide()
        expected = self.model.stale(now, grace)
        overtaken: set[Key] = set()
        racing = None
        if overtake is not None:  # another write commits between decision and write
            overtaken, racing = overtake(candidates)
        rm_before = copy.deepcopy(self.rm.comparable())
        aggs_before = self._aggregate_states()
        reaped: set[Key] = set()
        positions: dict[Key, int] = {}
        if candidates:
            result, recordings = self._run(
                c.Reap(now=now, stale_after_ms=STALE_MS, grace_from=grace, candidates=tuple(candidates))
            )
            reaped = {("agent", a) for a in result.reaped_agent_ids}
            reaped |= {("orchestrator", o) for o in result.reaped_orchestrator_ids}
            for r in recordings:
                key = name_of(r.domain_event)
                if key[0] not in ("agent", "orchestrator"):
                    continue
                positions[key] = r.notification.id
                self.last_reaped_at[key] = r.notification.id
        for key in expected - overtaken:
            self.model.lives[key].status = "offline"
        obs = ReapObs(
            why=why,
            now=now,
            grace=grace,
            decided_at=decided_at,
            candidates={(x.kind, x.entity_id) for x in candidates},
            expected=expected,
            overtaken=overtaken,
            racing=racing,
            reaped=reaped,
            positions=positions,
            rm_before=rm_before,
            rm_after=copy.deepcopy(self.rm.comparable()),
            aggs_before=aggs_before,
            aggs_after=self._aggregate_states(),
            status_after={k: self._rm_status(k) for k in ENTITY_KEYS},
            second=None if overtaken else self._second_run(now, grace),
        )
        self.reaps.append(obs)
        note(
            f"{why} reap at {self._t(now)} (grace {self._t(grace)}): decided {sorted(obs.candidates)}, "
            f"model expected {sorted(expected)}, overtaken {sorted(overtaken)} by {racing}, "
            f"reaped {sorted(reaped)}"
        )

    def _second_run(self, now: int, grace: int) -> list[Key]:
        """Decide and execute once more at the same ``now``; returns what it touched.

        Nothing is saved: a touched aggregate is dropped from memory again, and
        invariant 4 reports it.
        """
        candidates = reap_candidates(self.rm, now, STALE_MS, grace)
        if not candidates:
            return []
        _, aggs = self.app.execute(
            c.Reap(now=now, stale_after_ms=STALE_MS, grace_from=grace, candidates=tuple(candidates))
        )
        self.app.forget([a.id for a in aggs])
        return sorted(NAMES.get(a.id, ("other", str(a.id))) for a in aggs)

    def _advance_to(self, target: int) -> None:
        """Move the clock, running the scheduled reaper at every reap-every on the way."""
        while self.next_tick <= target:
            self.clock.now = self.next_tick
            self._reap("scheduled")
            self.next_tick += REAP_EVERY_MS
        self.clock.now = target

    def _edges(self) -> list[int]:
        """Moments at which an online entity crosses stale-after (the boundary)."""
        return sorted(
            {
                max(life.last_seen, self.grace) + STALE_MS
                for life in self.model.lives.values()
                if life.status == "online" and max(life.last_seen, self.grace) + STALE_MS >= self.now
            }
        )

    # -- rules: registrations and heartbeats ------------------------------------------

    @initialize(hostname=st.sampled_from(HOSTS), providers=st.sampled_from(PROVIDER_SETS))
    def everyone_registers(self, hostname: str, providers: tuple[str, ...]) -> None:
        """Start with the whole cast online, so that steps are not spent on strangers."""
        for oid in ORCHESTRATORS:
            self.register_orchestrator(oid, hostname, providers)
        for aid in AGENTS:
            self.register_agent(aid)

    @rule(
        oid=st.sampled_from(ORCHESTRATORS),
        hostname=st.sampled_from(HOSTS),
        providers=st.sampled_from(PROVIDER_SETS),
    )
    def register_orchestrator(self, oid: str, hostname: str, providers: tuple[str, ...]) -> None:
        key = ("orchestrator", oid)
        was = self.model.status(key)
        _, recs = self._run(self._cmd_register(key, self.now, hostname, providers))
        self.model.register(key, self.now, hostname, providers)
        self._proof(key, recs, was)
        note(f"register {key} at {self._t(self.now)} (was {was})")

    @rule(aid=st.sampled_from(AGENTS))
    def register_agent(self, aid: str) -> None:
        key = ("agent", aid)
        was = self.model.status(key)
        _, recs = self._run(self._cmd_register(key, self.now, "", ()))
        self.model.register(key, self.now)
        self._proof(key, recs, was)
        note(f"register {key} at {self._t(self.now)} (was {was})")

    @rule(key=st.sampled_from(ENTITY_KEYS))
    def heartbeat(self, key: Key) -> None:
        cmd = self._cmd_heartbeat(key, self.now)
        life = self.model.present(key)
        if life is None:
            self._refused(cmd, NotFoundError)
            return
        was = life.status
        _, recs = self._run(cmd)
        self.model.heartbeat(key, self.now)
        self._proof(key, recs, was)
        note(f"heartbeat {key} at {self._t(self.now)} (was {was})")

    @rule(
        oid=st.sampled_from(ORCHESTRATORS),
        agents=st.lists(st.sampled_from(MANAGED), unique=True, max_size=3),
    )
    def report_agents(self, oid: str, agents: list[str]) -> None:
        key = ("orchestrator", oid)
        managed = [
            {
                "agentId": m,
                "provider": "claude",
                "tmuxSession": f"relay-{m}",
                "cwd": f"/srv/{oid}",
                "approvalMode": "guarded",
                "startedAt": self.now,
            }
            for m in agents
        ]
        cmd = c.ReportManagedAgents(oid, managed, self.now)
        life = self.model.present(key)
        if life is None:
            self._refused(cmd, NotFoundError)
            return
        self._run(cmd)
        life.managed = tuple(agents)

    # -- rules: commands ---------------------------------------------------------------

    def _available(self, life: Any) -> bool:
        """Online, and not silent for longer than stale-after now (reaped or not yet)."""
        return bool(life.status == "online" and self.now - max(life.last_seen, self.grace) <= STALE_MS)

    @rule(oid=st.sampled_from(ORCHESTRATORS), provider=st.sampled_from(PROVIDERS))
    def spawn(self, oid: str, provider: str) -> None:
        cid = self._new_command_id()
        cmd = c.RequestSpawn(
            oid, cid, provider, None, None, "guarded", None, "operator", self.now,
            stale_after_ms=STALE_MS, grace_from=self.grace,
        )
        life = self.model.present(("orchestrator", oid))
        if life is None:
            self._refused(cmd, NotFoundError)
        elif not self._available(life):
            self._refused(cmd, ConflictError)
        elif provider not in life.providers:
            self._refused(cmd, InvalidInputError)
        else:
            self._run(cmd)
            life.commands[cid] = "pending"
            self.issued[cid] = oid
        note(f"spawn {provider} on {oid} ({life.status if life else 'absent'}) -> {cid}")

    @rule(
        oid=st.sampled_from(ORCHESTRATORS),
        action=st.sampled_from(ACTIONS),
        agent=st.none() | st.sampled_from(MANAGED),
    )
    def act(self, oid: str, action: str, agent: str | None) -> None:
        cid = self._new_command_id()
        cmd = c.RequestAction(
            oid, cid, action, agent, "operator", self.now,
            stale_after_ms=STALE_MS, grace_from=self.grace,
        )
        life = self.model.present(("orchestrator", oid))
        if life is None:
            self._refused(cmd, NotFoundError)
        elif not self._available(life):
            self._refused(cmd, ConflictError)
        elif agent is not None and agent not in life.managed:
            self._refused(cmd, NotFoundError)
        else:
            self._run(cmd)
            life.commands[cid] = "pending"
            self.issued[cid] = oid

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data(), status=st.sampled_from(RESULT_STATUSES))
    def record_result(self, data: st.DataObject, status: str) -> None:
        cid = data.draw(st.sampled_from(sorted(self.issued)), label="command")
        oid = self.issued[cid]
        cmd = c.RecordCommandResult(oid, cid, status, None, None, self.now)
        life = self.model.present(("orchestrator", oid))
        if life is None or cid not in life.commands:
            self._refused(cmd, NotFoundError)
        elif life.commands[cid] != "pending":
            self._refused(cmd, ConflictError)
        else:
            self._run(cmd)
            life.commands[cid] = status

    @rule(key=st.sampled_from(ENTITY_KEYS))
    def remove(self, key: Key) -> None:
        cmd = c.RemoveAgent(key[1], self.now) if key[0] == "agent" else c.RemoveOrchestrator(key[1], self.now)
        if self.model.present(key) is None:
            self._refused(cmd, NotFoundError)
            return
        self._run(cmd)
        self.model.remove(key)
        note(f"remove {key} at {self._t(self.now)}")

    # -- rules: time, the reaper, restarts ------------------------------------------------

    @rule(ms=DURATIONS)
    def advance_clock(self, ms: int) -> None:
        self._advance_to(self.now + ms)
        note(f"clock now {self._t(self.now)}")

    @precondition(lambda self: bool(self._edges()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0, 1]))
    def advance_to_edge(self, data: st.DataObject, offset: int) -> None:
        """Straight to someone's stale-after boundary, where off-by-one bugs live."""
        edge = data.draw(st.sampled_from(self._edges()), label="edge")
        self._advance_to(max(self.now, edge + offset))
        note(f"clock now {self._t(self.now)} (edge {self._t(edge)}{offset:+d})")

    @rule()
    def reap(self) -> None:
        self._reap("on-demand")

    @precondition(lambda self: any(life.status == "online" for life in self.model.lives.values()))
    @rule(data=st.data())
    def reap_overtaken(self, data: st.DataObject) -> None:
        """The reaper decides, another write to one candidate commits, then the reaper writes.

        With nobody stale yet, time first moves to 1 ms past the earliest
        boundary (scheduled runs on the way may take the candidate first).
        """
        if not self._decide():
            self._advance_to(self._edges()[0] + 1)
            note(f"clock now {self._t(self.now)}, to have someone to race for")
            if not self._decide():
                return

        def overtake(candidates: list[c.ReapCandidate]) -> tuple[set[Key], str]:
            judged = {(x.kind, x.entity_id): x.last_seen for x in candidates}
            target = data.draw(st.sampled_from(sorted(judged)), label="overtaken")
            races = [r for r in RACES if r != "report" or target[0] == "orchestrator"]
            race = data.draw(st.sampled_from(races), label="racing write")
            life = self.model.lives[target]
            if race == "heartbeat":
                self._run(self._cmd_heartbeat(target, self.now))
                self.model.heartbeat(target, self.now)
            elif race == "heartbeat-same-ms":
                # received in the same millisecond as the last one, committed later
                self._run(self._cmd_heartbeat(target, judged[target]))
                self.model.heartbeat(target, judged[target])
            elif race == "register":
                self._run(self._cmd_register(target, self.now, life.hostname, life.providers))
                self.model.register(target, self.now, life.hostname, life.providers)
            elif race == "report":
                self._run(c.ReportManagedAgents(target[1], [], self.now))
                life.managed = ()
            else:
                cmd = c.RemoveAgent if target[0] == "agent" else c.RemoveOrchestrator
                self._run(cmd(target[1], self.now))
                self.model.remove(target)
            return {target}, race

        self._reap("overtaken", overtake)

    @rule(
        downtime=st.sampled_from([0, 1, STALE_MS, 4 * STALE_MS]) | st.integers(0, 3 * STALE_MS),
        load=st.sampled_from(["rebuild", "fresh checkpoint", "old checkpoint"]),
    )
    def restart(self, downtime: int, load: str) -> None:
        """Stop, stay down for ``downtime``, start again from the log; a new grace begins."""
        before = copy.deepcopy(self.rm.comparable())
        self._sync_log()
        if load == "fresh checkpoint":
            TailFollower(self.app, self.rm, self.dir, 10**9).checkpoint_now()
        self.app.close()
        self.clock.now += downtime  # no scheduled reaps while the relay is down
        self.app = RelayApp(self.env)
        self.rm, how = load_read_models(self.app, None if load == "rebuild" else self.dir)
        if load == "fresh checkpoint":
            assert how.startswith("checkpoint"), how
        assert self.rm.comparable() == before, f"read models after restart ({how}) differ"
        self.grace = self.now
        self.next_tick = self.now + REAP_EVERY_MS
        self.audit.started(self._head() + 1, self.grace)
        note(f"restart after {downtime} ms down, at {self._t(self.now)}, read models {how}")

    # -- the invariants (docs/invariants.md) ---------------------------------------------

    @invariant()
    def inv01_no_false_positive(self) -> None:
        self._sync_log()
        for key, life in self.model.lives.items():
            if life.status == "removed":
                continue
            silence = max(life.max_gap, self.now - life.last_seen)
            if silence <= STALE_MS:
                facts = self.audit.facts[key]
                assert facts.reaps_in_life == 0, (
                    f"{key} never went {STALE_MS} ms without a heartbeat (longest {silence} ms) "
                    f"but was reaped"
                )
                assert self._rm_status(key) == "online", f"{key} is {self._rm_status(key)}"

    @invariant()
    def inv02_bounded_detection(self) -> None:
        for obs in self._fresh("inv02"):
            missed = obs.expected - obs.overtaken - obs.reaped
            assert not missed, f"the {obs.why} reap at {self._t(obs.now)} left stale {sorted(missed)} online"
        for key, life in self.model.lives.items():
            if life.status != "removed" and self._rm_status(key) == "online":
                silent = self.now - max(life.last_seen, self.grace)
                assert silent < STALE_MS + REAP_EVERY_MS, (
                    f"{key} silent for {silent} ms (since {self._t(max(life.last_seen, self.grace))}) "
                    f"is still online; the bound is stale-after + reap-every"
                )

    @invariant()
    def inv03_reap_only_when_online_and_stale(self) -> None:
        self._sync_log()
        for obs in self._fresh("inv03"):
            wrong = obs.reaped - obs.expected
            details = {
                k: (
                    self.model.lives[k].status,
                    obs.now - self.model.lives[k].last_seen,
                    obs.now - max(self.model.lives[k].last_seen, obs.grace),
                )
                for k in wrong
            }
            assert not wrong, (
                f"the {obs.why} reap at {self._t(obs.now)} reaped {details} (status, ms since "
                f"lastSeen, ms since the later of lastSeen and the start): it must be online and "
                f"the last figure over {STALE_MS} ms"
            )
        assert not self.audit.violations[3], self.audit.violations[3]

    @invariant()
    def inv04_second_reap_records_nothing(self) -> None:
        self._sync_log()
        for obs in self._fresh("inv04"):
            assert not obs.second, (
                f"a second reap at {self._t(obs.now)} would reap {obs.second} again"
            )
        assert not self.audit.violations[4], self.audit.violations[4]

    @invariant()
    def inv05_racing_heartbeat_wins(self) -> None:
        self._sync_log()
        for obs in self._fresh("inv05"):
            for key in obs.overtaken:
                assert key not in obs.reaped, (
                    f"{key} was written to ({obs.racing}) after the reaper's decision, "
                    f"yet the reaper's write reaped it"
                )
                if obs.racing in HEARTBEAT_RACES:
                    assert obs.status_after[key] == "online", f"{key} is {obs.status_after[key]}"
            for key, position in obs.positions.items():
                between = self.audit.between(key, obs.decided_at, position)
                assert not between, (
                    f"{key} was reaped at position {position} although "
                    f"{[e.topic for e in between]} committed after the decision at {obs.decided_at}"
                )
        assert not self.audit.violations[5], self.audit.violations[5]

    @invariant()
    def inv06_heartbeat_after_reap_revives(self) -> None:
        for key, reaped_at, revived_at, status_after in self.revivals:
            assert status_after == "online", f"{key} heartbeat after its reap left it {status_after}"
            for position, want in ((reaped_at, ("Reaped",)), (revived_at, PROOF_TOPICS)):
                found = self.app.recorder.select_notifications(start=position, limit=1)
                assert found and found[0].id == position, f"position {position} is gone from the log"
                topic = type(self.app.mapper.to_domain_event(found[0])).TOPIC
                assert topic.endswith(want), f"position {position} holds {topic}, expected {want}"

    @invariant()
    def inv07_removed_stays_removed(self) -> None:
        self._sync_log()
        for key, life in self.model.lives.items():
            if life.status != "removed":
                continue
            assert self._live(key) is None, f"removed {key} is back in the application"
            assert self._rm_status(key) is None, f"removed {key} is {self._rm_status(key)}"
            if key[0] == "orchestrator":
                assert orchestrator_agent_id(key[1]) not in self.rm.agents
        assert not self.audit.violations[7], self.audit.violations[7]

    @invariant()
    def inv08_reap_changes_only_status(self) -> None:
        for obs in self._fresh("inv08"):
            before, after = copy.deepcopy(obs.rm_before), copy.deepcopy(obs.rm_after)
            for state in (before, after):
                state["position"] = None
                for key in obs.reaped:
                    state["entities"][aggregate_id(key).hex][2] = None
            for key in obs.reaped:
                rows = [(before["agents"], after["agents"], key[1])]
                if key[0] == "orchestrator":
                    rows = [
                        (before["orchestrators"], after["orchestrators"], key[1]),
                        (before["agents"], after["agents"], orchestrator_agent_id(key[1])),
                    ]
                for b, a, rid in rows:
                    assert (b[rid]["status"], a[rid]["status"]) == ("online", "offline"), rid
                    b[rid]["status"] = a[rid]["status"] = None
                if key[0] == "orchestrator":
                    # Liveness that follows the status (issue 15): since when it is
                    # offline, and its managed agents now unknown rather than running.
                    b, a = before["orchestrators"][key[1]], after["orchestrators"][key[1]]
                    assert a.pop("offlineSince") == obs.now and b.pop("offlineSince", None) != obs.now
                    assert all(m["state"] == "unknown" for m in a["managedAgents"]), key
                    for m in (*a["managedAgents"], *b["managedAgents"]):
                        m.pop("state")
            assert before == after, f"the {obs.why} reap at {self._t(obs.now)} changed more than statuses"
            for key in set(obs.aggs_before) | set(obs.aggs_after):
                b, a = obs.aggs_before.get(key), obs.aggs_after.get(key)
                assert b is not None and a is not None, f"the reap made {key} appear or vanish"
                if key in obs.reaped:
                    assert (b.pop("status"), a.pop("status")) == ("online", "offline"), key
                    if "offline_since" in a:
                        assert a.pop("offline_since") == obs.now
                        b.pop("offline_since")
                assert b == a, f"the reap changed {key}'s aggregate: {b} -> {a}"
            # judged: drop the snapshots, long runs keep thousands of these
            obs.rm_before, obs.rm_after, obs.aggs_before, obs.aggs_after = {}, {}, {}, {}

    @invariant()
    def inv09_offline_only_by_reap(self) -> None:
        self._sync_log()
        for key in ENTITY_KEYS:
            facts = self.audit.facts.get(key)
            derived = facts.status if facts else None
            shown = self._rm_status(key)
            assert (shown or "removed") == (derived or "removed"), (
                f"{key} is {shown} in the read models but the log explains {derived}"
            )
            if shown == "offline":
                assert facts is not None and facts.last_status_topic.endswith("Reaped"), (
                    f"{key} is offline but its last status event is {facts and facts.last_status_topic}"
                )
        for o in self.rm.orchestrators.values():
            assert self.rm.agents[o["agentId"]]["status"] == o["status"], o["id"]

    @invariant()
    def inv10_grace_after_restart(self) -> None:
        self._sync_log()
        for obs in self._fresh("inv10"):
            if obs.now - obs.grace <= STALE_MS:
                assert not obs.candidates and not obs.reaped, (
                    f"{sorted(obs.candidates)} judged stale only {obs.now - obs.grace} ms after the start"
                )
        assert not self.audit.violations[10], self.audit.violations[10]

    @invariant()
    def inv11_replay_equals_live(self) -> None:
        rebuilt = ReadModels()
        catch_up(self.app, rebuilt)
        assert rebuilt.comparable() == self.rm.comparable(), "a rebuild from position 0 differs"
        for key in ENTITY_KEYS:
            agg = self._live(key)
            if agg is not None:
                stored = self.app.repository.get(aggregate_id(key))
                assert public_state(stored) == public_state(agg), f"{key}: replayed != live"

    @invariant()
    def inv12_one_result_per_command(self) -> None:
        self._sync_log()
        assert not self.audit.violations[12], self.audit.violations[12]
        for oid in ORCHESTRATORS:
            life = self.model.present(("orchestrator", oid))
            shown = {x["id"]: x["status"] for x in self.rm.commands_of(oid)}
            assert shown == (life.commands if life else {}), f"{oid} commands {shown}"
            for x in self.rm.commands_of(oid):
                assert ("result" in x) == (x["status"] != "pending"), x

    @invariant()
    def inv99_relay_agrees_with_the_model(self) -> None:
        self._sync_log()
        assert not self.audit.violations[0], self.audit.violations[0]
        present = {k: life for k, life in self.model.lives.items() if life.status != "removed"}
        assert set(self.rm.orchestrators) == {k[1] for k in present if k[0] == "orchestrator"}
        assert set(self.rm.agents) == {k[1] for k in present if k[0] == "agent"} | {
            orchestrator_agent_id(k[1]) for k in present if k[0] == "orchestrator"
        }
        for key, life in present.items():
            if key[0] == "agent":
                row = self.rm.agents[key[1]]
            else:
                row = self.rm.orchestrators[key[1]]
                assert row["hostname"] == life.hostname and row["providers"] == list(life.providers)
                assert [m["agentId"] for m in row["managedAgents"]] == list(life.managed)
                mirror = self.rm.agents[orchestrator_agent_id(key[1])]
                assert (mirror["status"], mirror["lastSeen"]) == (row["status"], row["lastSeen"])
            assert (row["status"], row["lastSeen"]) == (life.status, life.last_seen), (
                f"{key}: relay {row['status']}/{self._t(row['lastSeen'])}, "
                f"model {life.status}/{self._t(life.last_seen)}"
            )
            agg = self._live(key)
            assert agg is not None and (agg.status, agg.last_seen) == (life.status, life.last_seen)
            if key[0] == "orchestrator":
                assert [m["agentId"] for m in agg.managed_agents] == list(life.managed)
                assert agg.commands == life.commands


@pytest.mark.slow
def test_reaper_state_machine() -> None:
    """Every rule, every invariant, a fake clock; examples and steps come from the profile."""
    run_state_machine_as_test(ReaperMachine)
