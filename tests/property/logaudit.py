"""A second, independent reading of the log, for the property tests.

The read models are the relay's own reading of the log; this is the tests'.
``LogAudit`` folds raw events (from the store, or from ``GET /api/log``) and
checks the rules that must hold *between* events, whatever any projection
says: nothing happens to a removed entity but a new registration (7), only an
online, stale entity is reaped and only on what the reaper actually judged
(3, 4, 5), never inside the grace after a start (10), a command is requested
only of an online orchestrator and gets at most one result (12). It also
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
}
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
    )


class LogAudit:
    """Folds the log in position order and records every rule it sees broken."""

    def __init__(self, stale_after_ms: int) -> None:
        self.stale_after_ms = stale_after_ms
        self.facts: dict[Key, Facts] = {}
        self.entries: list[Entry] = []
        self.violations: dict[int, list[str]] = defaultdict(list)
        self.position = 0
        # (first position written by that run, lowest possible grace start)
        self._starts: list[tuple[int, int]] = [(1, 0)]

    def started(self, first_position: int, grace_from: int) -> None:
        """The relay (re)started: events from ``first_position`` on were written under
        a grace that began no earlier than ``grace_from``."""
        self._starts.append((first_position, grace_from))

    def grace_at(self, position: int) -> int:
        grace = 0
        for first, g in self._starts:
            if first <= position:
                grace = g
        return grace

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
                f.life += 1
                f.reaps_in_life = 0
                f.commands = {}
                f.last_seen = e.at
                f.status = "offline"
                self._status(f, e)
            return
        if m == "reregistered":
            if f.status == "removed":
                f.life += 1
                f.reaps_in_life = 0
                f.commands = {}
                f.last_seen = e.at
            else:
                f.last_seen = max(f.last_seen, e.at)
            f.status = "online"
            self._status(f, e)
            return
        if f.status == "removed":
            self._bad(7, e, "removed, yet something other than a registration happened to it")
            return
        if m == "heartbeat":
            f.status = "online"
            f.last_seen = max(f.last_seen, e.at)
            self._status(f, e)
        elif m == "report":
            pass
        elif m == "command":
            if f.status != "online":
                self._bad(12, e, f"a command was recorded for a {f.status} orchestrator")
            elif e.at - max(f.last_seen, self.grace_at(e.position)) > self.stale_after_ms:
                self._bad(12, e, "a command was recorded for an orchestrator silent for "
                          "longer than stale-after (offline by the rule, not yet reaped)")
            if e.command_id in f.commands:
                self._bad(12, e, f"command {e.command_id} requested twice")
            f.commands[str(e.command_id)] = "pending"
        elif m == "result":
            current = f.commands.get(str(e.command_id))
            if current is None:
                self._bad(12, e, f"a result for unknown command {e.command_id}")
            elif current != "pending":
                self._bad(12, e, f"a second result for command {e.command_id} ({current} before)")
            f.commands[str(e.command_id)] = e.result_status or "done"
        elif m == "removed":
            f.status = "removed"
            f.commands = {}
            self._status(f, e)
        elif m == "reaped":
            self._reaped(f, e)

    def _reaped(self, f: Facts, e: Entry) -> None:
        grace = self.grace_at(e.position)
        if f.status != "online":
            self._bad(4, e, f"reaped while {f.status}: a reap must record nothing the second time")
        silence = e.at - max(f.last_seen, grace)
        if silence <= self.stale_after_ms:
            self._bad(
                3,
                e,
                f"reaped after {e.at - f.last_seen} ms since lastSeen ({silence} ms counting "
                f"the grace), not more than stale-after {self.stale_after_ms} ms",
            )
        if e.at - grace <= self.stale_after_ms:
            self._bad(10, e, f"reaped {e.at - grace} ms after the relay started (grace)")
        if e.last_seen != f.last_seen:
            self._bad(
                5,
                e,
                f"the reaper judged lastSeen {e.last_seen}, but a proof of life at "
                f"{f.last_seen} was committed before its write",
            )
        f.status = "offline"
        f.reaps_in_life += 1
        self._status(f, e)

    @staticmethod
    def _status(f: Facts, e: Entry) -> None:
        f.last_status_topic = e.topic
        f.last_status_position = e.position

    def between(self, key: Key, after: int, before: int) -> list[Entry]:
        """``key``'s events with ``after < position < before``."""
        return [e for e in self.entries if e.key == key and after < e.position < before]
