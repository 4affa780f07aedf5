"""The questions handlers ask the read models, by name (issue 13).

Handlers parse, call one use case or one query, and shape the answer; what a
record looks like inside ``ReadModels`` (which dict, which key, what "not
found" means) is answered here, once, so the HTTP layer never reaches into
``rm.agents``, ``rm.commands`` or ``rm.messages.by_id`` itself. A ``Queries``
wraps any read models: the live ones, or those as of ``?at=``.

Decisions that read the fleet but record nothing (where a spawn without a
host goes: ADR 0037) are queries too; decisions that must see the writer's
truth are the application's (``RelayApp.heartbeat_agent``, ``remove_agent``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from relay.domain.agent import Agent
from relay.domain.errors import NotFoundError
from relay.domain.orchestrator import Orchestrator
from relay.domain.placement import NoPlacementError, place
from relay.domain.rules import is_broadcast, orchestrator_of_agent_id
from relay.projections.messages import recipients
from relay.projections.readmodels import ReadModels


class Queries:
    """Named questions over one set of read models."""

    __slots__ = ("rm",)

    def __init__(self, rm: ReadModels) -> None:
        self.rm = rm

    @property
    def position(self) -> int:
        """The newest log position these read models include."""
        return self.rm.position

    # -- agents ------------------------------------------------------------------

    def agent(self, agent_id: str) -> dict[str, Any]:
        """One agent's record (an orchestrator's own included), or NotFoundError."""
        agent = self.rm.agents.get(agent_id)
        if agent is None:
            raise NotFoundError(f"no agent {agent_id!r}")
        return agent

    def agents(self, status: str | None = None) -> list[dict[str, Any]]:
        """Agents by id, optionally only those with ``status``."""
        return self.rm.agents_sorted(status)

    # -- orchestrators -------------------------------------------------------------

    def orchestrator(self, orchestrator_id: str) -> dict[str, Any]:
        """One orchestrator's record, or NotFoundError."""
        o = self.rm.orchestrators.get(orchestrator_id)
        if o is None:
            raise NotFoundError(f"no orchestrator {orchestrator_id!r}")
        return o

    def orchestrators_json(self) -> bytes:
        """Every orchestrator, by hostname, as the JSON body of ``GET /api/orchestrators``."""
        return self.rm.orchestrators_json()

    def command(self, command_id: str) -> dict[str, Any]:
        """One command, or NotFoundError."""
        cmd = self.rm.commands.get(command_id)
        if cmd is None:
            raise NotFoundError(f"no command {command_id!r}")
        return cmd

    def commands_of(self, orchestrator_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """A known orchestrator's commands, oldest first (NotFoundError for an unknown one)."""
        self.orchestrator(orchestrator_id)
        return self.rm.commands_of(orchestrator_id, status)

    def managed_agents(
        self, state: str | None = None, attention: str | None = None
    ) -> list[dict[str, Any]]:
        """Every managed agent across hosts, with where it runs."""
        return self.rm.managed_agents(state, attention)

    def managed_agent(self, orchestrator_id: str, agent_id: str) -> dict[str, Any] | None:
        """One managed agent as ``GET /api/managed-agents`` lists it, or None."""
        return self.rm.managed_agent(orchestrator_id, agent_id)

    def managed_agent_ids(self, orchestrator_id: str) -> set[str]:
        """The agents ``orchestrator_id`` last reported (none for an unknown orchestrator)."""
        o = self.rm.orchestrators.get(orchestrator_id)
        return {m.get("agentId") for m in o["managedAgents"]} if o else set()

    def require_managed(self, orchestrator_id: str, agent_id: str) -> None:
        """NotFoundError unless ``orchestrator_id`` exists and manages ``agent_id``."""
        o = self.orchestrator(orchestrator_id)
        if not any(m.get("agentId") == agent_id for m in o["managedAgents"]):
            raise NotFoundError(
                f"orchestrator {orchestrator_id!r} has no managed agent {agent_id!r}"
            )

    def placement(
        self,
        provider: str,
        selector: dict[str, str],
        now: int,
        stale_after_ms: int,
        grace_from: int,
    ) -> str:
        """The orchestrator a spawn without a host goes to (ADR 0037), or NoPlacementError
        saying why none fits. A query: the spawn itself re-checks the host is online."""
        candidates = self.rm.placement_candidates(provider, selector, now, stale_after_ms, grace_from)
        try:
            return place(candidates, provider, selector).id
        except NoPlacementError as e:
            raise NoPlacementError(
                f"{e.message} (online: heard from within stale-after, {stale_after_ms / 1000:g} s)"
            ) from None

    def token_hash(self, orchestrator_id: str) -> str:
        """The hash of ``orchestrator_id``'s current token ("" when it has none)."""
        return self.rm.token_hashes.get(orchestrator_id, "")

    def token_owner(self, token_hash: str) -> str | None:
        """The orchestrator whose current token has this hash, if any."""
        return self.rm.token_owner(token_hash)

    # -- messages ------------------------------------------------------------------

    def message(self, message_id: str) -> dict[str, Any]:
        """One message (one recipient's copy), or NotFoundError."""
        m = self.rm.messages.by_id.get(message_id)
        if m is None:
            raise NotFoundError(
                f"no message {message_id!r} (never sent, or settled and forgotten after "
                "--keep-settled; GET /api/log keeps its history)"
            )
        return m

    def broadcast_content(self, broadcast_id: str) -> dict[str, Any]:
        """What a broadcast said, once for all its copies (ADR 0014)."""
        return self.rm.messages.broadcasts[broadcast_id]["content"]  # type: ignore[no-any-return]

    def messages(self, **filters: Any) -> tuple[list[dict[str, Any]], int | None]:
        """A page of messages matching ``filters`` (``Messages.query``) and the next ``after``."""
        return self.rm.messages.query(**filters)  # type: ignore[no-any-return]

    def inbox(self, agent_id: str, limit: int) -> list[dict[str, Any]]:
        """A known agent's open messages, urgent first (NotFoundError for an unknown agent)."""
        self.agent(agent_id)
        return self.rm.messages.inbox(agent_id)[:limit]  # type: ignore[no-any-return]

    def recipients(self, to: str, sender: str) -> list[str]:
        """Who a message to ``to`` reaches (NotFoundError when nobody): the agent itself,
        or a broadcast's matches, never its sender."""
        if not is_broadcast(to):
            if to not in self.rm.agents:
                raise NotFoundError(f"to: no agent {to!r}")
            return [to]
        found = recipients(self.rm, to, sender)
        if not found:
            raise NotFoundError(f"to: no agent matches {to!r} (a broadcast never reaches its sender)")
        return found

    # -- history -------------------------------------------------------------------

    def history_entity(self, kind: str, entity_id: str) -> tuple[UUID, str, str]:
        """(aggregate id, kind, natural id) of the entity a history URL names; an
        orchestrator's own agent record follows its orchestrator. NotFoundError if
        the log never had it."""
        oid = orchestrator_of_agent_id(entity_id) if kind == "agent" else None
        if oid is not None:
            agg = Orchestrator.create_id(oid)
            if agg.hex in self.rm.entities:
                return agg, "orchestrator", oid
        agg = (Agent if kind == "agent" else Orchestrator).create_id(entity_id)
        if agg.hex not in self.rm.entities:
            raise NotFoundError(f"no {kind} {entity_id!r} in the log")
        return agg, kind, entity_id
