"""A second, independent reading of the log, for the property tests.

The read models are the relay's own reading of the log; this is the tests'.
``LogAudit`` folds raw events (from the store, or from ``GET /api/log``) and
checks the rules that must hold *between* events, whatever any projection
says: nothing happens to a removed entity but a new registration (7), only an
online, stale entity is reaped and only on what the reaper actually judged
(3, 4, 5), never inside the grace after a start (10), a command is requested
only of an online orchestrator and gets at most one result (12). Issue 15's
rules too: a command is started only by its deadline and expired only past it
or (pending) when its host is offline, and never answered after (13); a spawn
is recorded only on a host with room, pending spawns counted (14); agents are
declared lost only after their host was offline for longer than lost-after
(15); nothing is reaped while the reaper is suspended, unless in a pass an
operator forced (16), nor within stale-after of a resume (17). It also
derives each entity's status from the log alone, so a test can compare what
the API shows with what the log explains (9).

Violations are collected per invariant number instead of raised, so that each
``@invariant`` of a state machine reports its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]  # (kind, natural id); kind is "agent" or "orchestrator"

# What each stored event type means for these rules. An event type missing here
# is reported (invariant 0): a new fact must be thought through before it ships.
MEANING: dict[str, str] = {
    "OrchestratorRegistered": "registered",
    "AgentRegistered": "registered",
    "OrchestratorReregistered": "reregistered",
    "AgentReregistered": "reregistered",
    "OrchestratorHeartbeatReceived": "heartbeat",
    "AgentHeartbeatReceived": "heartbeat",
    "ManagedAgentsReported": "report",
    "SpawnRequested": "command",
    "ActionRequested": "command",
    "CommandResultRecorded": "result",
    "OrchestratorRemoved": "removed",
    "AgentRemoved": "removed",
    "OrchestratorReaped": "reaped",
    "AgentReaped": "reaped",
    # ADR 0013: an enrolled host is known but offline until it registers; a host
    # re-registering itself is a proof of life; token facts change no status.
    "OrchestratorEnrolled": "enrolled",
    "OrchestratorReenrolled": "reenrolled",
    "OrchestratorReregisteredByHost": "reregistered",
    "OrchestratorTokenRotated": "report",
    "OrchestratorTokenRevoked": "report",
    # Issue 15 (ADR 0019).
    "OrchestratorCapacityDeclared": "capacity",
    "CommandStarted": "started",
    "CommandExpired": "expired",
    "ManagedAgentsLost": "lost",
}
# The reaper's own facts (one aggregate per log, not an entity the rules track).
REAPER_TOPICS = frozenset({"ReaperCreated", "ReapSuspended", "ReapResumed"})
OPEN = ("pending", "running")
PROOFS_OF_LIFE = frozenset({"registered", "reregistered", "heartbeat"})
# Facts about other things (messages, the log's own seals): no rule here is about
# them, but they share the log, so they are known rather than unknown.
OTHER_TOPICS = frozenset(
    {
        "MessageSent",
        "MessageDelivered",
        "BroadcastSent",
        "MessageClaimed",
        "MessageAcked",
        "MessageClaimReleased",
        "MessageClaimExpired",
        "MessageDeleted",
        "LogSealOpened",
        "LogSealed",
        "LogEpochsOpened",
        "EpochSealed",
    }
)


@dataclass(frozen=True)
class Entry:
    """One event of the log, reduced to what the rules need."""

    position: int
    topic: str
    kind: str
    entity_id: str
    at: int
    last_seen: int | None = None  # reaps: the lastSeen the reaper judged
    command_id: str | None = None
    result_status: str | None = None
    deadline_at: int | None = None  # commands: their deadlineAt
    reason: str | None = None  # CommandExpired
    max_agents: int | None = None  # OrchestratorCapacityDeclared
    agents: int | None = None  # ManagedAgentsReported: how many
    load_active: int | None = None  # heartbeats: load.activeAgents, when the host gave one

    @property
    def key(self) -> Key:
        return (self.kind, self.entity_id)

    @property
    def meaning(self) -> str:
        return MEANING.get(self.topic, "unknown")


@dataclass
class Facts:
    """An entity as the log alone explains it."""

    status: str  # online | offline | removed
    last_seen: int
    life: int = 1
    reaps_in_life: int = 0
    last_status_topic: str = ""
    last_status_position: int = 0
    commands: dict[str, str] = field(default_factory=dict)  # this life's: id -> status
    deadlines: dict[str, int | None] = field(default_factory=dict)
    spawns: set[str] = field(default_factory=set)  # spawns not yet over
    max_agents: int | None = None
    reported: int = 0
    load_active: int | None = None
    offline_since: int | None = None

    def afresh(self, at: int) -> None:
        """A new life after removal: nothing of the old one counts."""
        self.life += 1
        self.reaps_in_life = 0
        self.commands, self.deadlines, self.spawns = {}, {}, set()
        self.max_agents, self.reported, self.load_active = None, 0, None
        self.last_seen = at

    @property
    def busy(self) -> int:
        """Active agents as the aggregate counts them (load, else reported) plus open spawns."""
        active = self.reported if self.load_active is None else self.load_active
        return active + len(self.spawns)


def _active(load: Any) -> int | None:
    value = load.get("activeAgents") if isinstance(load, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def entry_from_api(e: dict[str, Any]) -> Entry:
    """An event as ``GET /api/log`` shows it."""
    data = e.get("data") or {}
    return Entry(
        position=e["position"],
        topic=e["type"],
        kind=e.get("entityKind") or "other",
        entity_id=e.get("entityId") or "",
        at=e["at"],
        last_seen=data.get("lastSeen"),
        command_id=data.get("commandId"),
        result_status=data.get("status"),
        deadline_at=data.get("deadlineAt"),
        reason=data.get("reason"),
        max_agents=data.get("maxAgents"),
        agents=len(data["agents"]) if isinstance(data.get("agents"), list) else None,
        load_active=_active(data.get("load")),
    )


def entry_from_event(position: int, event: Any, kind: str, entity_id: str) -> Entry:
    """A domain event as the store holds it (snake_case fields)."""
    d = event.__dict__
    agents = d.get("agents")
    return Entry(
        position=position,
        topic=type(event).TOPIC,
        kind=kind,
        entity_id=entity_id,
        at=d.get("at"),  # type: ignore[arg-type]
        last_seen=d.get("last_seen"),
        command_id=d.get("command_id"),
        result_status=d.get("status"),
        deadline_at=d.get("deadline_at"),
        reason=d.get("reason"),
        max_agents=d.get("max_agents"),
        agents=len(agents) if isinstance(agents, list) else None,
        load_active=_active(d.get("load")),
    )


class LogAudit:
    """Folds the log in position order and records every rule it sees broken."""

    def __init__(self, stale_after_ms: int, lost_after_ms: int = 300_000) -> None:
        self.stale_after_ms = stale_after_ms
        self.lost_after_ms = lost_after_ms
        self.facts: dict[Key, Facts] = {}
        # The reaper's brake, as the log says (ADR 0019), and the log ranges
        # (after, upto] written by passes an operator forced.
        self.suspended = False
        self.resumed_at = 0
        self._forced: list[tuple[int, int]] = []
        self.entries: list[Entry] = []
        self.violations: dict[int, list[str]] = defaultdict(list)
        self.position = 0
        # (first position written by that run, lowest and highest possible grace start)
        self._starts: list[tuple[int, int, int]] = [(1, 0, 0)]

    def started(self, first_position: int, grace_from: int, grace_upto: int | None = None) -> None:
        """The relay (re)started: events from ``first_position`` on were written under
        a grace that began no earlier than ``grace_from`` and no later than ``grace_upto``
        (a client that starts a server knows its start only within a band)."""
        self._starts.append((first_position, grace_from, grace_from if grace_upto is None else grace_upto))

    def forced(self, after: int, upto: int) -> None:
        """A pass an operator forced wrote the positions in ``(after, upto]``."""
        self._forced.append((after, upto))

    def grace_at(self, position: int, latest: bool = False) -> int:
        """When silence began to count for a write at ``position``: the start of that run
        (the earliest it can have been, or with ``latest`` the latest)."""
        grace = 0
        for first, lo, hi in self._starts:
            if first <= position:
                grace = hi if latest else lo
        return grace

    def _grace(self, position: int, latest: bool = False) -> int:
        """The relay's ``grace_from``: its start, or the reaper's last resume if later.

        A rule that says something must *not* have happened judges with the
        earliest start (silence looks longest); one that says something must
        have been refused judges with the latest (silence looks shortest)."""
        return max(self.grace_at(position, latest), self.resumed_at)

    def feed(self, entries: Iterable[Entry]) -> None:
        for e in entries:
            self._feed(e)

    def _bad(self, invariant: int, e: Entry, what: str) -> None:
        self.violations[invariant].append(f"position {e.position} {e.topic} {e.key}: {what}")

    def _feed(self, e: Entry) -> None:
        if e.position <= self.position:
            self._bad(11, e, f"position not after {self.position}: the log must only grow")
            return
        self.position = e.position
        self.entries.append(e)
        if e.topic in OTHER_TOPICS:
            return
        if e.topic in REAPER_TOPICS:
            if e.topic == "ReapSuspended":
                if self.suspended:
                    self._bad(16, e, "suspended twice without a resume between")
                self.suspended = True
            elif e.topic == "ReapResumed":
                if not self.suspended:
                    self._bad(16, e, "resumed without being suspended")
                self.suspended, self.resumed_at = False, e.at
            return
        f = self.facts.get(e.key)
        m = e.meaning
        if m == "unknown":
            self._bad(0, e, "an event type the invariants do not know; add it to MEANING")
            return
        if m == "registered":
            if f is not None:
                self._bad(0, e, "registered twice (the id is derived, so this cannot be)")
            self.facts[e.key] = f = Facts("online", e.at)
            self._status(f, e)
            return
        if m == "enrolled":
            if f is not None:
                self._bad(0, e, "enrolled as new twice (the id is derived, so this cannot be)")
            self.facts[e.key] = f = Facts("offline", e.at)
            self._status(f, e)
            return
        if f is None:
            self._bad(7, e, "an event for an entity that was never registered")
            return
        if m == "reenrolled":
            if f.status == "removed":  # afresh, offline until its host registers
                f.afresh(e.at)
                f.status = "offline"
                self._status(f, e)
            return
        if m == "reregistered":
            if f.status == "removed":
                f.afresh(e.at)
            else:
                f.last_seen = max(f.last_seen, e.at)
            f.status = "online"
            f.offline_since = None
            self._status(f, e)
            return
        if f.status == "removed":
            self._bad(7, e, "removed, yet something other than a registration happened to it")
            return
        if m == "heartbeat":
            f.status = "online"
            f.offline_since = None
            f.last_seen = max(f.last_seen, e.at)
            if e.kind == "orchestrator":
                f.load_active = e.load_active  # a heartbeat without a load clears it
            self._status(f, e)
        elif m == "report":
            if e.agents is not None:
                f.reported = e.agents
        elif m == "capacity":
            f.max_agents = e.max_agents
        elif m == "command":
            if f.status != "online":
                self._bad(12, e, f"a command was recorded for a {f.status} orchestrator")
            elif e.at - max(f.last_seen, self._grace(e.position, latest=True)) > self.stale_after_ms:
                self._bad(12, e, "a command was recorded for an orchestrator silent for "
                          "longer than stale-after (offline by the rule, not yet reaped)")
            if e.command_id in f.commands:
                self._bad(12, e, f"command {e.command_id} requested twice")
            if e.topic == "SpawnRequested" and f.max_agents is not None and f.busy >= f.max_agents:
                self._bad(14, e, f"a spawn on a host with {f.busy} of {f.max_agents} agents "
                          "(pending spawns included)")
            cid = str(e.command_id)
            f.commands[cid] = "pending"
            f.deadlines[cid] = e.deadline_at
            if e.topic == "SpawnRequested":
                f.spawns.add(cid)
        elif m == "started":
            cid = str(e.command_id)
            if f.commands.get(cid) != "pending":
                self._bad(12, e, f"started command {cid}, which was {f.commands.get(cid)}")
            deadline = f.deadlines.get(cid)
            if deadline is not None and e.at > deadline:
                self._bad(13, e, f"started {e.at - deadline} ms past its deadline")
            f.commands[cid] = "running"
        elif m == "expired":
            self._expired(f, e)
        elif m == "result":
            cid = str(e.command_id)
            current = f.commands.get(cid)
            if current is None:
                self._bad(12, e, f"a result for unknown command {e.command_id}")
            elif current == "expired":
                self._bad(13, e, f"a result for command {cid} after it expired")
            elif current not in OPEN:
                self._bad(12, e, f"a second result for command {e.command_id} ({current} before)")
            f.commands[cid] = e.result_status or "done"
            f.spawns.discard(cid)
        elif m == "lost":
            if f.status != "offline" or f.offline_since is None:
                self._bad(15, e, f"agents declared lost while their host is {f.status}")
            elif e.at - f.offline_since <= self.lost_after_ms:
                self._bad(15, e, f"agents declared lost {e.at - f.offline_since} ms after their "
                          f"host went offline, not more than lost-after {self.lost_after_ms} ms")
        elif m == "removed":
            f.status = "removed"
            f.commands, f.deadlines, f.spawns = {}, {}, set()
            f.reported, f.load_active = 0, None
            self._status(f, e)
        elif m == "reaped":
            self._reaped(f, e)

    def _expired(self, f: Facts, e: Entry) -> None:
        cid = str(e.command_id)
        current = f.commands.get(cid)
        if current not in OPEN:
            self._bad(13, e, f"expired command {cid}, which was {current}")
        if e.reason == "orchestrator offline":
            if f.status != "offline" or current != "pending":
                self._bad(13, e, f"expired as 'orchestrator offline': host {f.status}, command {current}")
        else:
            deadline = f.deadlines.get(cid)
            if deadline is None or e.at <= deadline:
                self._bad(13, e, f"expired ({e.reason}) at {e.at}, not past its deadline {deadline}")
        f.commands[cid] = "expired"
        f.spawns.discard(cid)

    def _reaped(self, f: Facts, e: Entry) -> None:
        grace = self._grace(e.position)
        if f.status != "online":
            self._bad(4, e, f"reaped while {f.status}: a reap must record nothing the second time")
        forced = any(lo < e.position <= hi for lo, hi in self._forced)
        if self.suspended and not forced:
            self._bad(16, e, "reaped while the reaper is suspended (and no operator forced the pass)")
        if self.resumed_at and e.at - self.resumed_at <= self.stale_after_ms:
            self._bad(17, e, f"reaped {e.at - self.resumed_at} ms after the reaper resumed, within "
                      f"the fresh stale-after grace ({self.stale_after_ms} ms)")
        silence = e.at - max(f.last_seen, grace)
        if silence <= self.stale_after_ms:
            self._bad(
                3,
                e,
                f"reaped after {e.at - f.last_seen} ms since lastSeen ({silence} ms counting "
                f"the grace), not more than stale-after {self.stale_after_ms} ms",
            )
        if e.at - self.grace_at(e.position) <= self.stale_after_ms:
            self._bad(10, e, f"reaped {e.at - self.grace_at(e.position)} ms after the relay started (grace)")
        if e.last_seen != f.last_seen:
            self._bad(
                5,
                e,
                f"the reaper judged lastSeen {e.last_seen}, but a proof of life at "
                f"{f.last_seen} was committed before its write",
            )
        f.status = "offline"
        f.offline_since = e.at
        f.reaps_in_life += 1
        self._status(f, e)

    @staticmethod
    def _status(f: Facts, e: Entry) -> None:
        f.last_status_topic = e.topic
        f.last_status_position = e.position

    def between(self, key: Key, after: int, before: int) -> list[Entry]:
        """``key``'s events with ``after < position < before``."""
        return [e for e in self.entries if e.key == key and after < e.position < before]
