"""The agent aggregate: a registered agent's profile and liveness.

An orchestrator's own agent record (``orchestrator-<id>``) is not an Agent: it
is derived from the orchestrator's events in the read model, so it follows the
orchestrator without a second event per heartbeat (ADR 0003).
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from relay.domain.errors import NotFoundError
from relay.domain.reaping import is_stale

ONLINE = "online"
OFFLINE = "offline"
REMOVED = "removed"


class Agent(Aggregate):
    """A registered agent: who it is, and whether it is alive."""

    TOPIC = "Agent"

    class Event(Aggregate.Event):
        TOPIC = "AgentEvent"

    @staticmethod
    def create_id(agent_id: str, **_: Any) -> UUID:
        """Derived from the natural id, so no lookup index is needed."""
        return uuid5(NAMESPACE_URL, "relay:agent:" + agent_id)

    class Registered(Aggregate.Created, Event):
        """An agent registered: online, with its profile."""

        TOPIC = "AgentRegistered"
        class_version = 1
        agent_id: str
        name: str
        label: str | None
        tags: list[str]
        machine: str | None
        capabilities: list[str]
        meta: dict[str, Any]
        at: int

    @event(Registered)
    def __init__(
        self,
        agent_id: str,
        name: str,
        label: str | None,
        tags: list[str],
        machine: str | None,
        capabilities: list[str],
        meta: dict[str, Any],
        at: int,
    ) -> None:
        self.agent_id = agent_id
        self._profile(name, label, tags, machine, capabilities, meta)
        self.status = ONLINE
        self.last_seen = at
        self.created_at = at

    def _profile(
        self,
        name: str,
        label: str | None,
        tags: list[str],
        machine: str | None,
        capabilities: list[str],
        meta: dict[str, Any],
    ) -> None:
        self.name = name
        self.label = label
        self.tags = tags
        self.machine = machine
        self.capabilities = capabilities
        self.meta = meta

    @property
    def removed(self) -> bool:
        return self.status == REMOVED

    def reregister(
        self,
        name: str,
        label: str | None,
        tags: list[str],
        machine: str | None,
        capabilities: list[str],
        meta: dict[str, Any],
        at: int,
    ) -> None:
        """Registering again updates the fields and brings it online; after removal, afresh."""
        self._reregistered(
            name=name,
            label=label,
            tags=tags,
            machine=machine,
            capabilities=capabilities,
            meta=meta,
            at=at,
        )

    class Reregistered(Event):
        """The agent registered again: a new profile, online (afresh after removal)."""

        TOPIC = "AgentReregistered"
        class_version = 1
        name: str
        label: str | None
        tags: list[str]
        machine: str | None
        capabilities: list[str]
        meta: dict[str, Any]
        at: int

    @event(Reregistered)
    def _reregistered(
        self,
        name: str,
        label: str | None,
        tags: list[str],
        machine: str | None,
        capabilities: list[str],
        meta: dict[str, Any],
        at: int,
    ) -> None:
        self._profile(name, label, tags, machine, capabilities, meta)
        if self.status == REMOVED:
            self.created_at = at
            self.last_seen = at
        else:
            self.last_seen = max(self.last_seen, at)
        self.status = ONLINE

    def heartbeat(self, at: int) -> None:
        """Proof of life, judged on the server's receive time ``at``."""
        if self.status == REMOVED:
            raise NotFoundError(f"agent {self.agent_id!r} was removed")
        self._heartbeat_received(at=at)

    class HeartbeatReceived(Event):
        """The agent was heard from at ``at`` (the relay's receive time)."""

        TOPIC = "AgentHeartbeatReceived"
        class_version = 1
        at: int

    @event(HeartbeatReceived)
    def _heartbeat_received(self, at: int) -> None:
        self.status = ONLINE
        self.last_seen = max(self.last_seen, at)

    def remove(self, at: int) -> None:
        """Forget the agent until it registers again."""
        if self.status == REMOVED:
            raise NotFoundError(f"agent {self.agent_id!r} was removed")
        self._removed(at=at)

    class Removed(Event):
        """The agent was forgotten until it registers again."""

        TOPIC = "AgentRemoved"
        class_version = 1
        at: int

    @event(Removed)
    def _removed(self, at: int) -> None:
        self.status = REMOVED

    def is_stale(self, now: int, stale_after_ms: int, grace_from: int) -> bool:
        """Online and silent for longer than stale-after (never counting relay downtime)."""
        return is_stale(self.status, self.last_seen, now, stale_after_ms, grace_from)

    def reap(self, now: int, judged_last_seen: int, stale_after_ms: int, grace_from: int) -> bool:
        """Mark offline if still stale and unchanged since judged; a racing heartbeat wins."""
        if self.last_seen != judged_last_seen:
            return False
        if not self.is_stale(now, stale_after_ms, grace_from):
            return False
        self._reaped(at=now, last_seen=judged_last_seen)
        return True

    class Reaped(Event):
        """The reaper marked the agent offline: silent since ``last_seen``, judged at ``at``."""

        TOPIC = "AgentReaped"
        class_version = 1
        at: int
        last_seen: int

    @event(Reaped)
    def _reaped(self, at: int, last_seen: int) -> None:
        self.status = OFFLINE
