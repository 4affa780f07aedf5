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
checkpoint plus tail), with a new grace period. Each pass of the reaper is the
service's own sequence (``relay.service.reap_pass``: the brake, the reap, then
the commands and agents that end), driven step by step.

Issue 15 (ADR 0019) is here too: commands carry deadlines and are started,
answered and expired; hosts declare capacity and report load; spawns go to a
named host or are placed (``place`` over the read models' candidates); the
brake may suspend the reaper (its threshold is drawn, one draw in three never
bites) and an operator may force a pass; offline hosts' agents turn
``unknown`` and then ``lost``.

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
from attrs import evolve
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
from relay.domain.placement import NoPlacementError, place
from relay.domain.rules import ACTIONS, PROVIDERS, RESULT_STATUSES, orchestrator_agent_id
from relay.projections.follower import TailFollower, catch_up, load_read_models
from relay.projections.readmodels import ReadModels
from relay.service import RaceWindow, grace_start, reap_candidates, reap_pass
from relay.store import store_env
from tests.property.logaudit import Key, LogAudit, entry_from_event

STALE_MS = 9_000  # a multiple of REAP_EVERY_MS: scheduled runs land exactly on the boundary
REAP_EVERY_MS = 3_000
DEADLINE_MS = 7_000  # --command-deadline: deadlines pass while hosts are alive too
LOST_MS = 12_000  # --lost-after
BRAKE_FRACTION = 0.5
BRAKE_MINIMA = (1, 2, 100)  # --max-reap-min: with 5 entities, 100 means the brake never bites
OPEN = ("pending", "running")
LABEL_SETS: tuple[dict[str, str], ...] = ({}, {"zone": "x"})
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
    # issue 15, orchestrators only
    max_agents: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    load: int | None = None  # the last heartbeat's load.activeAgents; a plain heartbeat clears it
    deadlines: dict[str, int] = field(default_factory=dict)
    spawns: set[str] = field(default_factory=set)  # spawns not yet over
    offline_since: int | None = None
    agents_lost: bool = False

    @property
    def busy(self) -> int:
        """Agents the host runs (its load, else its reported agents) plus spawns on their way."""
        return (len(self.managed) if self.load is None else self.load) + len(self.spawns)

    def end(self, cid: str, status: str) -> None:
        self.commands[cid] = status
        self.spawns.discard(cid)


class Model:
    """What the relay must know, kept the simplest way that could work."""

    def __init__(self) -> None:
        self.lives: dict[Key, Life] = {}
        self.suspended = False  # the reaper's brake
        self.resumed_at = 0

    def present(self, key: Key) -> Life | None:
        life = self.lives.get(key)
        return life if life is not None and life.status != "removed" else None

    def status(self, key: Key) -> str | None:
        life = self.lives.get(key)
        return life.status if life else None

    def register(
        self,
        key: Key,
        at: int,
        hostname: str = "",
        providers: tuple[str, ...] = (),
        max_agents: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        life = self.present(key)
        if life is None:
            life = self.lives[key] = Life(key[0], "online", at, hostname=hostname, providers=providers)
        else:
            self._alive(life, at)  # a registration keeps the last load
            life.hostname, life.providers = hostname, providers
        life.max_agents, life.labels = max_agents, dict(labels or {})

    def heartbeat(self, key: Key, at: int, load: int | None = None) -> None:
        life = self.lives[key]
        self._alive(life, at)
        life.load = load

    @staticmethod
    def _alive(life: Life, at: int) -> None:
        life.max_gap = max(life.max_gap, at - life.last_seen)
        life.last_seen = max(life.last_seen, at)
        life.status = "online"
        life.offline_since, life.agents_lost = None, False

    def remove(self, key: Key) -> None:
        life = self.lives[key]
        life.status = "removed"
        life.managed = ()
        life.commands = {}
        life.spawns = set()

    def online(self) -> int:
        return sum(life.status == "online" for life in self.lives.values())

    def grace(self, start: int) -> int:
        """Silence before this never counts: the start, or the reaper's last resume."""
        return max(start, self.resumed_at)

    def brake(self, would_reap: int, force: bool, minimum: int) -> str:
        """The brake as the issue words it: more than the fraction *and* more than the minimum."""
        if force:
            return "reap"
        over = would_reap > minimum and would_reap > BRAKE_FRACTION * self.online()
        if self.suspended:
            return "hold" if over else "resume"
        return "suspend" if over else "reap"

    def end_commands(self, now: int) -> None:
        """What a pass ends after its reap: commands past their deadline, the pending commands
        of offline hosts, and the agents of hosts offline for longer than lost-after."""
        for (kind, _), life in self.lives.items():
            if kind != "orchestrator" or life.status == "removed":
                continue
            for cid, status in list(life.commands.items()):
                if status in OPEN and now > life.deadlines[cid]:
                    life.end(cid, "expired")
            if life.status == "offline":
                for cid, status in list(life.commands.items()):
                    if status == "pending":
                        life.end(cid, "expired")
                assert life.offline_since is not None
                if life.managed and not life.agents_lost and now - life.offline_since > LOST_MS:
                    life.agents_lost = True

    def fits(self, life: Life, now: int, grace: int, provider: str, selector: dict[str, str]) -> bool:
        """Placement as the issue words it: online, offers, matches, has room."""
        return (
            life.status == "online"
            and now - max(life.last_seen, grace) <= STALE_MS
            and provider in life.providers
            and all(life.labels.get(k) == v for k, v in selector.items())
            and (life.max_agents is None or life.busy < life.max_agents)
        )

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
    grace: int  # the later of the start and the last resume
    start: int  # the relay's start (invariant 10)
    decision: str  # what the relay's pass did: reap | suspend | hold | resume
    model_decision: str
    decided_at: int  # read-model position the decision was made at
    candidates: set[Key]
    expected: set[Key]  # what the model says this pass reaps (its stale set, unless the brake holds)
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
        self.settings = Settings(
            data_dir=self.dir,
            stale_after=STALE_MS / 1000,
            reap_every=REAP_EVERY_MS / 1000,
            command_deadline=DEADLINE_MS / 1000,
            lost_after=LOST_MS / 1000,
            max_reap_fraction=BRAKE_FRACTION,
        )
        self.clock = FakeClock(T0)
        self.app = RelayApp(self.env)
        self.rm, _ = load_read_models(self.app, None)
        self.grace = self.clock.now_ms()
        self.next_tick = self.grace + REAP_EVERY_MS
        self.model = Model()
        self.audit = LogAudit(STALE_MS, LOST_MS)
        self.audit.started(1, self.grace)
        self.reaps: list[ReapObs] = []
        self.cursors: dict[str, int] = defaultdict(int)
        self.last_reaped_at: dict[Key, int] = {}
        self.revivals: list[tuple[Key, int, int, str | None]] = []
        self.issued: dict[str, str] = {}  # every command id ever requested -> orchestrator
        self.command_seq = 0
        self.last_pass = (-1, -1)  # (now, the log's head) right after the last pass of the reaper

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
            entries.append(entry_from_event(n.id, ev, *name_of(ev)))
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

    def _cmd_heartbeat(self, key: Key, at: int, load: int | None = None) -> c.Command:
        if key[0] == "agent":
            return c.HeartbeatAgent(key[1], at)
        return c.HeartbeatOrchestrator(key[1], at, None if load is None else {"activeAgents": load})

    def _cmd_register(
        self,
        key: Key,
        at: int,
        hostname: str,
        providers: tuple[str, ...],
        max_agents: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> c.Command:
        if key[0] == "agent":
            return c.RegisterAgent(key[1], key[1], None, [], None, [], {}, at)
        return c.RegisterOrchestrator.of(
            key[1], hostname, f"/srv/{key[1]}", list(providers), ["HOME"], {}, "0" * 64, at,
            max_agents=max_agents, labels=dict(labels or {}),
        )

    def _proof(self, key: Key, recordings: list[Any], was: str | None) -> None:
        """A registration or heartbeat landed; remember a revival after a reap (6)."""
        if was == "offline":
            proof = next(
                r for r in recordings if type(r.domain_event).TOPIC.endswith(PROOF_TOPICS)
            )  # a registration may also record the host's capacity after it
            self.revivals.append(
                (key, self.last_reaped_at[key], proof.notification.id, self._rm_status(key))
            )

    def _new_command_id(self) -> str:
        self.command_seq += 1
        return f"cmd-{self.command_seq}"

    # -- the reaper ------------------------------------------------------------------

    def _grace(self) -> int:
        """The relay's ``grace_from`` as the model knows it: the start, or the last resume."""
        return self.model.grace(self.grace)

    def _decide(self) -> list[c.ReapCandidate]:
        return reap_candidates(self.rm, self.now, STALE_MS, self._grace())

    def _drive(
        self,
        steps: Any,
        on_window: Callable[[RaceWindow], None],
        on_command: Callable[[c.Command], Any],
    ) -> c.ReapResult:
        """Run a ``reap_pass`` generator: each command through ``on_command``."""
        reply: Any = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(step, RaceWindow):
                on_window(step)
                reply = None
            else:
                reply = on_command(step)

    def _reap(
        self,
        why: str,
        overtake: Callable[[list[c.ReapCandidate]], tuple[set[Key], str]] | None = None,
        force: bool = False,
    ) -> None:
        """One pass of the reaper: the service's own ``reap_pass``, its commands run here."""
        now, start, grace = self.now, self.grace, self._grace()
        relay_grace = grace_start(self.rm, start)
        assert relay_grace == grace, (
            f"the relay's grace starts at {self._t(relay_grace)}, the model's at {self._t(grace)}"
        )
        decided_at = self.rm.position
        candidates = self._decide()
        stale = self.model.stale(now, grace)
        model_decision = self.model.brake(len(stale), force, self.settings.max_reap_min)
        expected = stale if model_decision == "reap" else set()
        head = self._head()
        suspended_before = bool(self.rm.reaper.get("suspended"))
        overtaken: set[Key] = set()
        racing = None
        sent: list[str] = []
        reaped: set[Key] = set()
        positions: dict[Key, int] = {}
        around: dict[str, Any] = {}

        def window(step: RaceWindow) -> None:
            nonlocal overtaken, racing
            if overtake is not None:  # another write commits between decision and write
                overtaken, racing = overtake(list(step.candidates))

        def command(cmd: c.Command) -> Any:
            sent.append(type(cmd).__name__)
            if not isinstance(cmd, c.Reap):
                return self._run(cmd)[0]
            around["rm_before"] = copy.deepcopy(self.rm.comparable())
            around["aggs_before"] = self._aggregate_states()
            result, recordings = self._run(cmd)
            around["rm_after"] = copy.deepcopy(self.rm.comparable())
            around["aggs_after"] = self._aggregate_states()
            reaped.update(("agent", a) for a in result.reaped_agent_ids)
            reaped.update(("orchestrator", o) for o in result.reaped_orchestrator_ids)
            for r in recordings:
                key = name_of(r.domain_event)
                if key[0] in ("agent", "orchestrator"):
                    positions[key] = r.notification.id
                    self.last_reaped_at[key] = r.notification.id
            return result

        self._drive(reap_pass(self.rm, now, start, self.settings, force), window, command)
        if "rm_before" not in around:  # no reap was written: nothing changed by one
            around["rm_before"] = around["rm_after"] = copy.deepcopy(self.rm.comparable())
            around["aggs_before"] = around["aggs_after"] = self._aggregate_states()
        if force:
            self.audit.forced(head, self._head())
        decision = (
            "suspend" if "SuspendReaping" in sent
            else "resume" if "ResumeReaping" in sent
            else "hold" if suspended_before and not force
            else "reap"
        )
        # The model follows the contract: the brake, the reap, then what ends.
        if model_decision == "suspend":
            self.model.suspended = True
        elif model_decision == "resume":
            self.model.suspended, self.model.resumed_at = False, now
        for key in expected - overtaken:
            life = self.model.lives[key]
            life.status = "offline"
            life.offline_since = now
        self.model.end_commands(now)
        self.last_pass = (now, self._head())
        obs = ReapObs(
            why=why,
            now=now,
            grace=grace,
            start=start,
            decision=decision,
            model_decision=model_decision,
            decided_at=decided_at,
            candidates={(x.kind, x.entity_id) for x in candidates},
            expected=expected,
            overtaken=overtaken,
            racing=racing,
            reaped=reaped,
            positions=positions,
            rm_before=around["rm_before"],
            rm_after=around["rm_after"],
            aggs_before=around["aggs_before"],
            aggs_after=around["aggs_after"],
            status_after={k: self._rm_status(k) for k in ENTITY_KEYS},
            second=None if overtaken else self._second_run(now, force),
        )
        self.reaps.append(obs)
        note(
            f"{why} reap at {self._t(now)} (grace {self._t(grace)}): decided {sorted(obs.candidates)}, "
            f"brake {decision} (model {model_decision}), model expected {sorted(expected)}, "
            f"overtaken {sorted(overtaken)} by {racing}, reaped {sorted(reaped)}, sent {sent}"
        )

    def _second_run(self, now: int, force: bool) -> list[Key]:
        """Run the pass once more at the same ``now``; returns what it touched.

        Nothing is saved: a touched aggregate is dropped from memory again, and
        invariant 4 reports it.
        """
        touched: list[Key] = []

        def command(cmd: c.Command) -> Any:
            result, aggs = self.app.execute(cmd)
            self.app.forget([a.id for a in aggs])
            touched.extend(NAMES.get(a.id, ("other", str(a.id))) for a in aggs)
            return result

        self._drive(reap_pass(self.rm, now, self.grace, self.settings, force), lambda _: None, command)
        return sorted(touched)

    def _advance_to(self, target: int) -> None:
        """Move the clock, running the scheduled reaper at every reap-every on the way."""
        while self.next_tick <= target:
            self.clock.now = self.next_tick
            self._reap("scheduled")
            self.next_tick += REAP_EVERY_MS
        self.clock.now = target

    def _edges(self) -> list[int]:
        """Moments at which an online entity crosses stale-after (the boundary)."""
        grace = self._grace()
        return sorted(
            {
                max(life.last_seen, grace) + STALE_MS
                for life in self.model.lives.values()
                if life.status == "online" and max(life.last_seen, grace) + STALE_MS >= self.now
            }
        )

    # -- rules: registrations and heartbeats ------------------------------------------

    @initialize(
        hostname=st.sampled_from(HOSTS),
        providers=st.sampled_from(PROVIDER_SETS),
        brake_min=st.sampled_from(BRAKE_MINIMA),
        max_agents=st.sampled_from([None, 1, 2]),
    )
    def everyone_registers(
        self, hostname: str, providers: tuple[str, ...], brake_min: int, max_agents: int | None
    ) -> None:
        """Start with the whole cast online, so that steps are not spent on strangers."""
        self.settings = evolve(self.settings, max_reap_min=brake_min)
        note(f"brake: more than {BRAKE_FRACTION} of the online and more than {brake_min}")
        for i, oid in enumerate(ORCHESTRATORS):
            self.register_orchestrator(oid, hostname, providers, max_agents, i % len(LABEL_SETS))
        for aid in AGENTS:
            self.register_agent(aid)

    @rule(
        oid=st.sampled_from(ORCHESTRATORS),
        hostname=st.sampled_from(HOSTS),
        providers=st.sampled_from(PROVIDER_SETS),
        max_agents=st.sampled_from([None, 1, 2]),
        labels=st.sampled_from(range(len(LABEL_SETS))),
    )
    def register_orchestrator(
        self, oid: str, hostname: str, providers: tuple[str, ...], max_agents: int | None, labels: int
    ) -> None:
        key = ("orchestrator", oid)
        was = self.model.status(key)
        cmd = self._cmd_register(key, self.now, hostname, providers, max_agents, LABEL_SETS[labels])
        _, recs = self._run(cmd)
        self.model.register(key, self.now, hostname, providers, max_agents, LABEL_SETS[labels])
        self._proof(key, recs, was)
        note(f"register {key} at {self._t(self.now)} (was {was}), max {max_agents} {LABEL_SETS[labels]}")

    @rule(aid=st.sampled_from(AGENTS))
    def register_agent(self, aid: str) -> None:
        key = ("agent", aid)
        was = self.model.status(key)
        _, recs = self._run(self._cmd_register(key, self.now, "", ()))
        self.model.register(key, self.now)
        self._proof(key, recs, was)
        note(f"register {key} at {self._t(self.now)} (was {was})")

    @rule(key=st.sampled_from(ENTITY_KEYS), load=st.none() | st.integers(0, 2))
    def heartbeat(self, key: Key, load: int | None) -> None:
        load = load if key[0] == "orchestrator" else None
        cmd = self._cmd_heartbeat(key, self.now, load)
        life = self.model.present(key)
        if life is None:
            self._refused(cmd, NotFoundError)
            return
        was = life.status
        _, recs = self._run(cmd)
        self.model.heartbeat(key, self.now, load)
        self._proof(key, recs, was)
        note(f"heartbeat {key} at {self._t(self.now)} (was {was}), load {load}")

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
        return bool(life.status == "online" and self.now - max(life.last_seen, self._grace()) <= STALE_MS)

    def _issued(self, life: Life, cid: str, oid: str, deadline_at: int, spawn: bool) -> None:
        life.commands[cid] = "pending"
        life.deadlines[cid] = deadline_at
        if spawn:
            life.spawns.add(cid)
        self.issued[cid] = oid

    @rule(
        oid=st.sampled_from(ORCHESTRATORS),
        provider=st.sampled_from(PROVIDERS),
        deadline=st.sampled_from([DEADLINE_MS, REAP_EVERY_MS - 1]),
        n=st.integers(1, 3),
    )
    def spawn(self, oid: str, provider: str, deadline: int, n: int = 1) -> None:
        """Invariant 14 on a named host: refused when full, pending spawns counted (``n`` in a
        row, so that a host fills up before its spawns are answered)."""
        for _ in range(n):
            self._spawn_one(oid, provider, deadline)

    def _spawn_one(self, oid: str, provider: str, deadline: int) -> None:
        cid = self._new_command_id()
        cmd = c.RequestSpawn(
            oid, cid, provider, None, None, "guarded", None, "operator", self.now,
            stale_after_ms=STALE_MS, grace_from=self._grace(), deadline_at=self.now + deadline,
        )
        life = self.model.present(("orchestrator", oid))
        if life is None:
            self._refused(cmd, NotFoundError)
        elif not self._available(life):
            self._refused(cmd, ConflictError)
        elif provider not in life.providers:
            self._refused(cmd, InvalidInputError)
        elif life.max_agents is not None and life.busy >= life.max_agents:
            self._refused(cmd, ConflictError)  # invariant 14: full
        else:
            self._run(cmd)
            self._issued(life, cid, oid, self.now + deadline, spawn=True)
        note(f"spawn {provider} on {oid} ({life.status if life else 'absent'}) -> {cid}")

    @rule(provider=st.sampled_from(PROVIDERS), selector=st.sampled_from(range(len(LABEL_SETS))))
    def spawn_anywhere(self, provider: str, selector: int) -> None:
        """Invariant 14: ``place`` over the read models, as ``POST /api/agents/spawn`` does, picks
        a host that fits and is the least loaded (then hostname, then id), or refuses when none fits."""
        want = LABEL_SETS[selector]
        now, grace = self.now, self._grace()
        fits = {
            k[1]: life
            for k, life in self.model.lives.items()
            if k[0] == "orchestrator" and self.model.fits(life, now, grace, provider, want)
        }
        try:
            target = place(self.rm.placement_candidates(provider, want, now, STALE_MS, grace), provider, want)
        except NoPlacementError as e:
            assert not fits, f"invariant 14: refused ({e}) although {sorted(fits)} fit"
            return
        best = min(fits, key=lambda oid: (fits[oid].busy, fits[oid].hostname, oid), default=None)
        assert target.id == best, (
            f"invariant 14: placed {provider} {want} on {target.id}; the model says {best} "
            f"(fits: { {oid: (life.busy, life.hostname) for oid, life in fits.items()} })"
        )
        self._spawn_one(target.id, provider, DEADLINE_MS)
        placed = self.model.lives[("orchestrator", target.id)].commands
        assert placed.get(f"cmd-{self.command_seq}") == "pending", "the model refused the placed spawn"

    @rule(
        oid=st.sampled_from(ORCHESTRATORS),
        action=st.sampled_from(ACTIONS),
        agent=st.none() | st.sampled_from(MANAGED),
    )
    def act(self, oid: str, action: str, agent: str | None) -> None:
        cid = self._new_command_id()
        cmd = c.RequestAction(
            oid, cid, action, agent, "operator", self.now,
            stale_after_ms=STALE_MS, grace_from=self._grace(), deadline_at=self.now + DEADLINE_MS,
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
            self._issued(life, cid, oid, self.now + DEADLINE_MS, spawn=False)

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data(), status=st.sampled_from(RESULT_STATUSES))
    def record_result(self, data: st.DataObject, status: str) -> None:
        """Exactly one result, while the command is open; after expiry 409, recorded nowhere."""
        cid = data.draw(st.sampled_from(sorted(self.issued)), label="command")
        oid = self.issued[cid]
        cmd = c.RecordCommandResult(oid, cid, status, None, None, self.now)
        life = self.model.present(("orchestrator", oid))
        if life is None or cid not in life.commands:
            self._refused(cmd, NotFoundError)
        elif life.commands[cid] not in OPEN:
            self._refused(cmd, ConflictError)
        else:
            self._run(cmd)
            life.end(cid, status)

    def _open_commands(self) -> list[str]:
        return sorted(
            cid
            for life in self.model.lives.values()
            if life.status != "removed"
            for cid, status in life.commands.items()
            if status in OPEN
        )

    @precondition(lambda self: bool(self.issued))
    @rule(data=st.data(), any_command=st.booleans())
    def start_command(self, data: st.DataObject, any_command: bool) -> None:
        """The host marks a command running; never past its deadline, never once it is over."""
        pool = sorted(self.issued) if any_command or not self._open_commands() else self._open_commands()
        cid = data.draw(st.sampled_from(pool), label="command")
        oid = self.issued[cid]
        cmd = c.StartCommand(oid, cid, self.now)
        life = self.model.present(("orchestrator", oid))
        if life is None or cid not in life.commands:
            self._refused(cmd, NotFoundError)
        elif life.commands[cid] == "running":
            head = self._head()
            self._run(cmd)
            assert self._head() == head, "a second start of a running command appended to the log"
        elif life.commands[cid] != "pending" or self.now > life.deadlines[cid]:
            self._refused(cmd, ConflictError)
        else:
            self._run(cmd)
            life.commands[cid] = "running"
        note(f"start {cid} at {self._t(self.now)}: now {life.commands.get(cid) if life else None}")

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

    @rule(back=st.integers(0, len(ENTITY_KEYS)), half=st.sampled_from([STALE_MS // 2, STALE_MS]))
    def outage_and_return(self, back: int, half: int) -> None:
        """Everyone falls silent past stale-after (with the brake on, the passes hold: 16);
        ``back`` of them return and a pass resumes; ``half`` later, within or at the end of
        the fresh grace, those still silent must not be reaped yet (17)."""
        edges = self._edges()
        self._advance_to(max(self.now, edges[-1] + 1) if edges else self.now)
        for key in ENTITY_KEYS[:back]:
            if self.model.present(key) is not None:
                self.heartbeat(key, None)
        self._reap("on-demand")
        self._advance_to(self.now + half)
        self._reap("on-demand")

    @rule()
    def force_reap(self) -> None:
        """``POST /api/system/reap?force=true``: one pass whatever the brake says."""
        self._reap("forced", force=True)

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
                self._run(
                    self._cmd_register(
                        target, self.now, life.hostname, life.providers, life.max_agents, life.labels
                    )
                )
                self.model.register(
                    target, self.now, life.hostname, life.providers, life.max_agents, life.labels
                )
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
        if self.model.suspended:
            return  # the brake holds every reap back (16): detection waits for the resume
        grace = self._grace()
        for key, life in self.model.lives.items():
            if life.status != "removed" and self._rm_status(key) == "online":
                silent = self.now - max(life.last_seen, grace)
                assert silent < STALE_MS + REAP_EVERY_MS, (
                    f"{key} silent for {silent} ms (since {self._t(max(life.last_seen, grace))}) "
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
            if obs.now - obs.start <= STALE_MS:
                assert not obs.candidates and not obs.reaped, (
                    f"{sorted(obs.candidates)} judged stale only {obs.now - obs.start} ms after the start"
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
            assert shown == (life.commands if life else {}), (
                f"{oid} commands {shown}, the model's {life.commands if life else {}}"
            )
            for x in self.rm.commands_of(oid):
                assert ("result" in x) == (x["status"] not in (*OPEN, "expired")), x
                assert ("expired" in x) == (x["status"] == "expired"), x

    @invariant()
    def inv13_commands_end_by_their_deadline(self) -> None:
        """Every command is terminal by deadlineAt + reap-every (and a pass ends what it must)."""
        self._sync_log()
        assert not self.audit.violations[13], self.audit.violations[13]
        passed = [obs.now for obs in self._fresh("inv13")]
        for cmd in self.rm.commands.values():
            if cmd["status"] not in OPEN:
                continue
            deadline = cmd["deadlineAt"]
            late = [t for t in passed if t > deadline]
            assert not late, (
                f"invariant 13: {cmd['id']} is {cmd['status']} although a pass at "
                f"{self._t(late[0])} ran past its deadline {self._t(deadline)}"
            )
            # Scheduled passes run every reap-every from the start (none while the relay is down).
            bound = max(deadline, self.grace) + REAP_EVERY_MS
            assert self.now < bound, (
                f"invariant 13: {cmd['id']} is still {cmd['status']} at {self._t(self.now)}, "
                f"deadline {self._t(deadline)} + reap-every"
            )

    @invariant()
    def inv14_never_over_capacity(self) -> None:
        """From the log: at every SpawnRequested the host had room (pending spawns counted)."""
        self._sync_log()
        assert not self.audit.violations[14], self.audit.violations[14]

    @invariant()
    def inv15_agent_states_follow_their_host(self) -> None:
        """``unknown`` only while the host is offline and within lost-after; ``lost`` only after."""
        self._sync_log()
        assert not self.audit.violations[15], self.audit.violations[15]
        # Judged right after a pass (nothing written since): lost is marked by passes, and
        # agents reported by a host already offline start unknown until the next one.
        just_passed = self.last_pass == (self.now, self._head())
        for oid, o in self.rm.orchestrators.items():
            life = self.model.lives[("orchestrator", oid)]
            want = "running" if life.status == "online" else "lost" if life.agents_lost else "unknown"
            for m in o["managedAgents"]:
                assert m["state"] == want, (
                    f"invariant 15: {m['agentId']} on {o['status']} {oid} is {m['state']}, "
                    f"the model says {want}"
                )
                if m["state"] == "unknown":
                    assert o["status"] == "offline", f"invariant 15: {m['agentId']} unknown on online {oid}"
                    silent = self.now - o["offlineSince"]
                    assert not just_passed or silent <= LOST_MS, (
                        f"invariant 15: {m['agentId']} still unknown right after a pass, "
                        f"{silent} ms after {oid} went offline (lost-after {LOST_MS})"
                    )
                elif m["state"] == "lost":
                    assert o["status"] == "offline" and self.now - o["offlineSince"] > LOST_MS, (
                        f"invariant 15: {m['agentId']} lost on {o['status']} {oid}"
                    )

    @invariant()
    def inv16_no_reap_while_suspended(self) -> None:
        """The brake: a pass over the threshold reaps none; so do passes until one is under it."""
        self._sync_log()
        assert not self.audit.violations[16], self.audit.violations[16]
        for obs in self._fresh("inv16"):
            assert obs.decision == obs.model_decision, (
                f"invariant 16: the {obs.why} pass at {self._t(obs.now)} did {obs.decision}, "
                f"the brake's rule says {obs.model_decision}"
            )
            if obs.decision != "reap":
                assert not obs.reaped, f"invariant 16: {sorted(obs.reaped)} reaped by a {obs.decision} pass"
        assert bool(self.rm.reaper.get("suspended")) == self.model.suspended, self.rm.reaper

    @invariant()
    def inv17_fresh_grace_after_resume(self) -> None:
        """After a resume, nothing is reaped before a full stale-after has passed since."""
        self._sync_log()
        assert not self.audit.violations[17], self.audit.violations[17]
        for obs in self._fresh("inv17"):
            if obs.reaped:
                assert obs.now - self.model.resumed_at > STALE_MS or obs.grace > self.model.resumed_at, (
                    f"invariant 17: {sorted(obs.reaped)} reaped {obs.now - self.model.resumed_at} ms "
                    f"after the resume at {self._t(self.model.resumed_at)}"
                )

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
                assert (row["maxAgents"], row["labels"]) == (life.max_agents, life.labels), key
                if life.status == "offline":  # (an online host's record keeps its last offlineSince)
                    assert row["offlineSince"] == life.offline_since, (
                        f"{key}: offlineSince {row['offlineSince']}, model {life.offline_since}"
                    )
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
