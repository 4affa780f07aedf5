"""The read models: orchestrators, managed agents, agents and commands.

Folded from the log in position order, served from memory, and shaped as the
wire format already (camelCase dicts), so a query is a lookup and one
``orjson.dumps``. ``apply`` is deterministic: it reads only the event, never
the clock, so a rebuild from position 0 equals the live state (tested).

``apply`` can also say what changed, as (SSE event name, data) pairs, so the
stream is derived from the same fold as the queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import orjson

from relay.domain.placement import HostView
from relay.domain.rules import orchestrator_agent_id
from relay.projections import messages as _messages
from relay.projections import placement as _placement
from relay.projections.fold import Change
from relay.projections.messages import Messages
from relay.projections.placement import PlacementIndex

Handler = Callable[["ReadModels", Any, list[Change] | None], None]

# 2: tokenHashes; 3: messages; 4: capacity, command deadlines, reaper; 5: attention (issue 16)
FORMAT_VERSION = 5
ATTENTION_FIELDS = ("attention", "attentionSince", "attentionReason", "attentionExcerpt")
NO_ATTENTION: dict[str, Any] = dict.fromkeys(ATTENTION_FIELDS)


class ReadModels:
    """Everything the queries need, as of ``position`` in the log."""

    def __init__(self) -> None:
        self.position = 0
        self.orchestrators: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, dict[str, Any]] = {}
        self.commands_by_orchestrator: dict[str, list[str]] = {}
        # aggregate id (hex) -> [kind, natural id, version]; kept after removal
        # so that the raw log can always name the entity of an event.
        self.entities: dict[str, list[Any]] = {}
        # orchestrator id -> sha256 hex of its current token. Internal: never on
        # the wire; the auth middleware checks orchestrator tokens against it.
        self.token_hashes: dict[str, str] = {}
        self._token_owners: dict[str, str] = {}
        self._sorted_orchestrators: list[dict[str, Any]] | None = None
        # Encoded orchestrators for the list query: each kept until an event of
        # that orchestrator is applied; the whole list until anything is.
        self._encoded_orchestrators: dict[str, bytes] = {}
        self._orchestrators_json: tuple[int, bytes] | None = None
        self.messages = Messages()
        # orchestrator id -> its commands not yet over (pending or running), by id: what
        # placement counts as taken and what the reaper's deadline pass looks at, without
        # scanning every command ever sent. Internal, derived from ``commands`` (rebuilt
        # in ``from_state``, not checkpointed).
        self.open_commands: dict[str, dict[str, dict[str, Any]]] = {}
        # command id -> when it settled (its result's or expiry's ``at``): what keep-settled
        # forgets (ADR 0036) without scanning every command. Derived like ``open_commands``.
        self.settled_commands: dict[str, int] = {}
        # Placement's order (relay/projections/placement.py, ADR 0037): re-filed after each
        # event of an orchestrator; internal and derived like ``open_commands``.
        self.placement = PlacementIndex()
        # The reaper's brake (relay/domain/outage.py), as the log says.
        self.reaper: dict[str, Any] = {"suspended": False, "since": None, "resumedAt": 0}
        # The position of the event being applied (a message's seq is where it was sent).
        self.position_applying = 0

    # -- folding ---------------------------------------------------------------

    def apply(self, position: int, event: Any, emit: bool = False) -> list[Change]:
        """Fold one event; positions must increase (they may have gaps)."""
        if position <= self.position:
            raise ValueError(f"event at position {position} is not after {self.position}")
        changes: list[Change] | None = [] if emit else None
        self.position_applying = position
        handler = _HANDLERS.get(type(event).TOPIC)  # type: ignore[attr-defined]
        if handler is not None:
            handler(self, event, changes)
        entity = self.entities.get(event.originator_id.hex)
        if entity is not None:
            entity[2] = event.originator_version
            if entity[0] == "orchestrator":
                self._encoded_orchestrators.pop(entity[1], None)
                if handler is not ReadModels._orchestrator_heartbeat:  # it re-files itself
                    self._refile(entity[1])
        self.position = position
        return changes or []

    def _refile(self, oid: str) -> None:
        """Bring ``oid``'s placement entry up to date (it costs a comparison when nothing moved)."""
        self.placement.update(oid, self.orchestrators.get(oid), self.open_spawns(oid))

    def _entity(self, event: Any) -> list[Any]:
        return self.entities[event.originator_id.hex]

    def _named(self, event: Any, kind: str, natural_id: str) -> None:
        self.entities[event.originator_id.hex] = [kind, natural_id, event.originator_version]

    # orchestrators

    def _orchestrator_registered(self, ev: Any, changes: list[Change] | None) -> None:
        self._named(ev, "orchestrator", ev.orchestrator_id)
        self._orchestrator_fresh(ev.orchestrator_id, ev, changes)

    def _orchestrator_fresh(self, oid: str, ev: Any, changes: list[Change] | None) -> None:
        self.orchestrators[oid] = {
            "id": oid,
            "hostname": ev.hostname,
            "status": "online",
            "agentId": orchestrator_agent_id(oid),
            "providers": ev.providers,
            "baseDir": ev.base_dir,
            "envKeys": ev.env_keys,
            "meta": ev.meta,
            "managedAgents": [],
            "lastSeen": ev.at,
            "createdAt": ev.at,
            "maxAgents": None,
            "labels": {},
            "load": None,
            "activeAgents": 0,
            "offlineSince": None,
            "agentsLostAt": None,
        }
        self.commands_by_orchestrator[oid] = []
        self._set_token_hash(oid, ev.token_hash)
        self._sorted_orchestrators = None
        self._orchestrator_changed(oid, changes)

    def _set_token_hash(self, oid: str, token_hash: str | None) -> None:
        """A registration rotates the token: the previous one stops working."""
        old = self.token_hashes.pop(oid, None)
        if old is not None:
            self._token_owners.pop(old, None)
        if token_hash:
            self.token_hashes[oid] = token_hash
            self._token_owners[token_hash] = oid

    def _orchestrator_reregistered(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators.get(oid)
        if o is None:
            self._orchestrator_fresh(oid, ev, changes)
            return
        o["hostname"] = ev.hostname
        o["providers"] = ev.providers
        o["baseDir"] = ev.base_dir
        o["envKeys"] = ev.env_keys
        o["meta"] = ev.meta
        o["status"] = "online"
        o["lastSeen"] = max(o["lastSeen"], ev.at)
        o["agentsLostAt"] = None
        self._agents_state(o, "running")
        self._set_token_hash(oid, ev.token_hash)
        self._sorted_orchestrators = None
        self._orchestrator_changed(oid, changes)

    def _orchestrator_enrolled(self, ev: Any, changes: list[Change] | None) -> None:
        """Known before its host ever registered: listed offline, with its token's hash."""
        self._named(ev, "orchestrator", ev.orchestrator_id)
        self._orchestrator_fresh(ev.orchestrator_id, ev, None)
        self.orchestrators[ev.orchestrator_id]["status"] = "offline"
        self._orchestrator_changed(ev.orchestrator_id, changes)

    def _orchestrator_reenrolled(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators.get(oid)
        if o is None:  # enrolled again after removal: afresh, offline
            fresh = {**ev.__dict__, "env_keys": [], "meta": {}}
            self._orchestrator_fresh(oid, _Fields(fresh), None)
            self.orchestrators[oid]["status"] = "offline"
            self._orchestrator_changed(oid, changes)
            return
        o["hostname"] = ev.hostname
        o["baseDir"] = ev.base_dir
        o["providers"] = ev.providers
        self._set_token_hash(oid, ev.token_hash)
        self._sorted_orchestrators = None
        self._orchestrator_changed(oid, changes)

    def _orchestrator_reregistered_by_host(self, ev: Any, changes: list[Change] | None) -> None:
        """Like a registration, but the token (and the admin's grant) stay as they were."""
        oid = self._entity(ev)[1]
        o = self.orchestrators[oid]
        o["hostname"] = ev.hostname
        o["providers"] = ev.providers
        o["baseDir"] = ev.base_dir
        o["envKeys"] = ev.env_keys
        o["meta"] = ev.meta
        o["status"] = "online"
        o["lastSeen"] = max(o["lastSeen"], ev.at)
        self._sorted_orchestrators = None
        self._orchestrator_changed(oid, changes)

    def _orchestrator_token_rotated(self, ev: Any, changes: list[Change] | None) -> None:
        self._set_token_hash(self._entity(ev)[1], ev.token_hash)

    def _orchestrator_token_revoked(self, ev: Any, changes: list[Change] | None) -> None:
        self._set_token_hash(self._entity(ev)[1], None)

    def _orchestrator_heartbeat(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators[oid]
        was = o["status"]
        o["status"] = "online"
        o["lastSeen"] = max(o["lastSeen"], ev.at)
        load = ev.load
        if load is not None or o["load"] is not None:
            o["load"] = load
            o["activeAgents"] = _active(o)
            self._refile(oid)
        elif was != "online":
            self._refile(oid)
        # A plain heartbeat of an online host (most of the log) changes nothing placement
        # indexes: liveness by the clock is judged when placing.
        if was != "online":
            o["agentsLostAt"] = None
            self._agents_state(o, "running")
        a = self.agents[o["agentId"]]
        a["status"] = "online"
        a["lastSeen"] = o["lastSeen"]
        if changes is not None:
            # The orchestrator's record carries lastSeen; its agent record is
            # news only when the status flips (keeps the fan-out's hot path lean).
            changes.append(("orchestrator.status", o))
            if was != "online":
                changes.append(("agent.status", a))

    def _managed_agents_reported(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators[oid]
        # Copies: the event's dicts are the live aggregate's too, and we add ``state``.
        state = (
            "running" if o["status"] == "online" else "lost" if o.get("agentsLostAt") else "unknown"
        )
        # An agent keeps its attention across reports; one no longer listed loses it
        # (the aggregate applies the same rule, ADR 0032).
        before = {m["agentId"]: m for m in o["managedAgents"]}
        o["managedAgents"] = [
            {**m, "state": state, **_attention_of(before.get(m["agentId"]))} for m in ev.agents
        ]
        o["activeAgents"] = _active(o)
        if changes is not None:
            changes.append(("orchestrator.status", o))

    def _agent_awaiting_input(self, ev: Any, changes: list[Change] | None) -> None:
        self._attention_changed(
            ev,
            {
                "attention": ev.attention,
                "attentionSince": ev.at,
                "attentionReason": ev.reason,
                "attentionExcerpt": ev.excerpt,
            },
            changes,
        )

    def _agent_input_resumed(self, ev: Any, changes: list[Change] | None) -> None:
        self._attention_changed(ev, NO_ATTENTION, changes)

    def _attention_changed(
        self, ev: Any, fields: dict[str, Any], changes: list[Change] | None
    ) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators[oid]
        m = next((m for m in o["managedAgents"] if m["agentId"] == ev.agent_id), None)
        if m is None:
            return  # the aggregate only records this for a listed agent; never happens
        m.update(fields)
        if changes is not None:
            changes.append(("orchestrator.status", o))
            changes.append(("orchestrator.attention", _managed_view(o, m)))

    def _agents_state(self, o: dict[str, Any], state: str) -> None:
        for m in o["managedAgents"]:
            m["state"] = state

    def _capacity_declared(self, ev: Any, changes: list[Change] | None) -> None:
        o = self.orchestrators[self._entity(ev)[1]]
        o["maxAgents"] = ev.max_agents
        o["labels"] = ev.labels
        if changes is not None:
            changes.append(("orchestrator.status", o))

    def _agents_lost(self, ev: Any, changes: list[Change] | None) -> None:
        o = self.orchestrators[self._entity(ev)[1]]
        o["agentsLostAt"] = ev.at
        self._agents_state(o, "lost")
        if changes is not None:
            changes.append(("orchestrator.status", o))

    def _command_started(self, ev: Any, changes: list[Change] | None) -> None:
        cmd = self.commands[ev.command_id]
        cmd["status"] = "running"
        cmd["startedAt"] = ev.at
        if changes is not None:
            changes.append(("orchestrator.command", cmd))

    def _command_expired(self, ev: Any, changes: list[Change] | None) -> None:
        cmd = self.commands[ev.command_id]
        self.open_commands.get(cmd["orchestratorId"], {}).pop(ev.command_id, None)
        cmd["status"] = "expired"
        cmd["expired"] = {"reason": ev.reason, "at": ev.at}
        self.settled_commands[ev.command_id] = ev.at
        if changes is not None:
            changes.append(("orchestrator.command", cmd))

    def _reaper_created(self, ev: Any, changes: list[Change] | None) -> None:
        return None

    def _reap_suspended(self, ev: Any, changes: list[Change] | None) -> None:
        self.reaper = {
            "suspended": True,
            "since": ev.at,
            "wouldReap": ev.would_reap,
            "online": ev.online,
            "resumedAt": self.reaper["resumedAt"],
        }
        if changes is not None:
            changes.append(("system.reaper", self.reaper))

    def _reap_resumed(self, ev: Any, changes: list[Change] | None) -> None:
        self.reaper = {"suspended": False, "since": None, "resumedAt": ev.at}
        if changes is not None:
            changes.append(("system.reaper", self.reaper))

    def _spawn_requested(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        cmd = {
            "id": ev.command_id,
            "orchestratorId": oid,
            "kind": "spawn",
            "status": "pending",
            "requestedAt": ev.at,
            "requestedBy": ev.requested_by,
            "provider": ev.provider,
            "cwd": ev.cwd,
            "label": ev.label,
            "approvalMode": ev.approval_mode,
            "prompt": ev.prompt,
            "deadlineAt": ev.deadline_at,
        }
        # Only on spawns that asked for them (ADR 0034): other commands read as before.
        if ev.worktree is not None:
            cmd["worktree"] = ev.worktree
        if ev.resume is not None:
            cmd["resume"] = ev.resume
        self._command_added(oid, cmd, changes)

    def _input_requested(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        cmd = {
            "id": ev.command_id,
            "orchestratorId": oid,
            "kind": "input",
            "status": "pending",
            "requestedAt": ev.at,
            "requestedBy": ev.requested_by,
            "action": "input",
            "agentId": ev.agent_id,
            "text": ev.text,
            "enter": ev.enter,
            "deadlineAt": ev.deadline_at,
        }
        self._command_added(oid, cmd, changes)

    def _action_requested(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        cmd = {
            "id": ev.command_id,
            "orchestratorId": oid,
            "kind": ev.action,
            "status": "pending",
            "requestedAt": ev.at,
            "requestedBy": ev.requested_by,
            "action": ev.action,
            "agentId": ev.agent_id,
            "deadlineAt": ev.deadline_at,
        }
        if ev.remove_worktree:
            cmd["removeWorktree"] = True
        self._command_added(oid, cmd, changes)

    def _command_added(self, oid: str, cmd: dict[str, Any], changes: list[Change] | None) -> None:
        self.commands[cmd["id"]] = cmd
        self.commands_by_orchestrator[oid].append(cmd["id"])
        self.open_commands.setdefault(oid, {})[cmd["id"]] = cmd
        if changes is not None:
            changes.append(("orchestrator.command", cmd))

    def _command_result_recorded(self, ev: Any, changes: list[Change] | None) -> None:
        cmd = self.commands[ev.command_id]
        self.open_commands.get(cmd["orchestratorId"], {}).pop(ev.command_id, None)
        cmd["status"] = ev.status
        cmd["result"] = {
            "status": ev.status,
            "error": ev.error,
            "agentId": ev.agent_id,
            "at": ev.at,
        }
        self.settled_commands[ev.command_id] = ev.at
        if changes is not None:
            changes.append(("orchestrator.command", cmd))

    def _settled_commands_forgotten(self, ev: Any, changes: list[Change] | None) -> None:
        """Settled commands leave the read models (ADR 0036); GET /api/log keeps them."""
        oid = self._entity(ev)[1]
        gone = set(ev.command_ids)
        for cid in gone:
            self.commands.pop(cid, None)
            self.settled_commands.pop(cid, None)
        ids = self.commands_by_orchestrator.get(oid)
        if ids is not None:
            self.commands_by_orchestrator[oid] = [i for i in ids if i not in gone]

    def _orchestrator_removed(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators.pop(oid)
        self.open_commands.pop(oid, None)
        self._set_token_hash(oid, None)
        self.agents.pop(o["agentId"], None)
        for cid in self.commands_by_orchestrator.pop(oid, []):
            self.commands.pop(cid, None)
            self.settled_commands.pop(cid, None)
        self._sorted_orchestrators = None
        if changes is not None:
            changes.append(("orchestrator.removed", {"id": oid}))
            changes.append(("agent.removed", {"id": o["agentId"]}))

    def _orchestrator_reaped(self, ev: Any, changes: list[Change] | None) -> None:
        oid = self._entity(ev)[1]
        o = self.orchestrators[oid]
        o["status"] = "offline"
        o["offlineSince"] = ev.at
        self._agents_state(o, "unknown")
        a = self.agents[o["agentId"]]
        a["status"] = "offline"
        if changes is not None:
            changes.append(("orchestrator.status", o))
            changes.append(("agent.status", a))

    def _orchestrator_changed(self, oid: str, changes: list[Change] | None) -> None:
        """(Re)derive the orchestrator's own agent record, which follows it."""
        o = self.orchestrators[oid]
        aid = o["agentId"]
        a = {
            "id": aid,
            "name": o["hostname"],
            "label": o["hostname"],
            "tags": ["orchestrator"],
            "machine": o["hostname"],
            "capabilities": ["orchestrator"],
            "status": o["status"],
            "meta": {"orchestratorId": oid},
            "lastSeen": o["lastSeen"],
            "createdAt": o["createdAt"],
        }
        self.agents[aid] = a
        if changes is not None:
            changes.append(("orchestrator.status", o))
            changes.append(("agent.status", a))

    # agents

    def _agent_registered(self, ev: Any, changes: list[Change] | None) -> None:
        self._named(ev, "agent", ev.agent_id)
        self._agent_fresh(ev.agent_id, ev, changes)

    def _agent_fresh(self, aid: str, ev: Any, changes: list[Change] | None) -> None:
        self.agents[aid] = {
            "id": aid,
            "name": ev.name,
            "label": ev.label,
            "tags": ev.tags,
            "machine": ev.machine,
            "capabilities": ev.capabilities,
            "status": "online",
            "meta": ev.meta,
            "lastSeen": ev.at,
            "createdAt": ev.at,
        }
        if changes is not None:
            changes.append(("agent.status", self.agents[aid]))

    def _agent_reregistered(self, ev: Any, changes: list[Change] | None) -> None:
        aid = self._entity(ev)[1]
        a = self.agents.get(aid)
        if a is None:
            self._agent_fresh(aid, ev, changes)
            return
        a.update(
            name=ev.name,
            label=ev.label,
            tags=ev.tags,
            machine=ev.machine,
            capabilities=ev.capabilities,
            meta=ev.meta,
            status="online",
            lastSeen=max(a["lastSeen"], ev.at),
        )
        if changes is not None:
            changes.append(("agent.status", a))

    def _agent_heartbeat(self, ev: Any, changes: list[Change] | None) -> None:
        a = self.agents[self._entity(ev)[1]]
        a["status"] = "online"
        a["lastSeen"] = max(a["lastSeen"], ev.at)
        if changes is not None:
            changes.append(("agent.status", a))

    def _agent_removed(self, ev: Any, changes: list[Change] | None) -> None:
        aid = self._entity(ev)[1]
        self.agents.pop(aid, None)
        if changes is not None:
            changes.append(("agent.removed", {"id": aid}))

    def _agent_reaped(self, ev: Any, changes: list[Change] | None) -> None:
        a = self.agents[self._entity(ev)[1]]
        a["status"] = "offline"
        if changes is not None:
            changes.append(("agent.status", a))

    # -- queries -------------------------------------------------------------

    def orchestrators_sorted(self) -> list[dict[str, Any]]:
        """All orchestrators by hostname (then id); cached until one is added or renamed."""
        if self._sorted_orchestrators is None:
            self._sorted_orchestrators = sorted(
                self.orchestrators.values(), key=lambda o: (o["hostname"], o["id"])
            )
        return self._sorted_orchestrators

    def orchestrators_json(self) -> bytes:
        """``orchestrators_sorted()`` as JSON, re-encoding only orchestrators changed since.

        1,000 orchestrators with their managed agents are ~1 MB of JSON and
        ~1 ms of orjson: most of ``GET /api/orchestrators``. Only events of an
        orchestrator change its record (``apply`` drops its encoding), so the
        rest are reused, also under a stream of heartbeats (docs/benchmarks.md).
        """
        cached = self._orchestrators_json
        if cached is not None and cached[0] == self.position:
            return cached[1]
        encoded = self._encoded_orchestrators
        parts: list[bytes] = []
        for o in self.orchestrators_sorted():
            b = encoded.get(o["id"])
            if b is None:
                b = encoded[o["id"]] = orjson.dumps(o)
            parts.append(b)
        body = b"[" + b",".join(parts) + b"]"
        self._orchestrators_json = (self.position, body)
        return body

    def agents_sorted(self, status: str | None = None) -> list[dict[str, Any]]:
        """Agents by id, optionally only those with ``status``."""
        agents = sorted(self.agents.values(), key=lambda a: a["id"])
        if status is not None:
            agents = [a for a in agents if a["status"] == status]
        return agents

    def managed_agents(
        self, state: str | None = None, attention: str | None = None
    ) -> list[dict[str, Any]]:
        """Every managed agent across hosts, with where it runs; optionally only in ``state``,
        or only with ``attention`` (``input``, ``idle``; the dashboard's needs-input queue)."""
        out: list[dict[str, Any]] = []
        for o in self.orchestrators_sorted():
            for m in o["managedAgents"]:
                if state is not None and m.get("state") != state:
                    continue
                if attention is not None and m.get("attention") != attention:
                    continue
                out.append(_managed_view(o, m))
        return out

    def managed_agent(self, orchestrator_id: str, agent_id: str) -> dict[str, Any] | None:
        """One managed agent as ``GET /api/managed-agents`` lists it, or None."""
        o = self.orchestrators.get(orchestrator_id)
        if o is None:
            return None
        m = next((m for m in o["managedAgents"] if m["agentId"] == agent_id), None)
        return None if m is None else _managed_view(o, m)

    def commands_of(self, orchestrator_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """An orchestrator's commands, oldest first."""
        ids = self.commands_by_orchestrator.get(orchestrator_id, [])
        cmds = [self.commands[i] for i in ids]
        if status is not None:
            cmds = [x for x in cmds if x["status"] == status]
        return cmds

    def token_owner(self, token_hash: str) -> str | None:
        """The orchestrator whose current token has this hash, if any."""
        return self._token_owners.get(token_hash)

    def entity_of(self, aggregate_id: UUID) -> tuple[str, str] | None:
        """(kind, natural id) of an aggregate, removed ones included."""
        e = self.entities.get(aggregate_id.hex)
        return (e[0], e[1]) if e else None

    def version_of(self, kind: str, natural_id: str) -> int | None:
        """The aggregate version the read model has seen (for the reaper's check)."""
        from relay.domain.agent import Agent
        from relay.domain.orchestrator import Orchestrator

        cls = Agent if kind == "agent" else Orchestrator
        e = self.entities.get(cls.create_id(natural_id).hex)
        return e[2] if e else None

    # -- checkpoints -----------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume folding from ``position``."""
        return {
            "format": FORMAT_VERSION,
            "position": self.position,
            "orchestrators": self.orchestrators,
            "agents": self.agents,
            "commands": self.commands,
            "commandsByOrchestrator": self.commands_by_orchestrator,
            "entities": self.entities,
            "tokenHashes": self.token_hashes,
            "messages": self.messages.to_state(),
            "reaper": self.reaper,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReadModels:
        """The inverse of ``to_state``; raises ValueError on an unknown format."""
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown read-model format {state.get('format')!r}")
        rm = cls()
        rm.position = state["position"]
        rm.orchestrators = state["orchestrators"]
        rm.agents = state["agents"]
        rm.commands = state["commands"]
        rm.commands_by_orchestrator = state["commandsByOrchestrator"]
        rm.entities = state["entities"]
        rm.token_hashes = state["tokenHashes"]
        rm._token_owners = {h: oid for oid, h in rm.token_hashes.items()}
        rm.messages = Messages.from_state(state["messages"])
        rm.reaper = state["reaper"]
        for cmd in rm.commands.values():
            if cmd["status"] in ("pending", "running"):
                rm.open_commands.setdefault(cmd["orchestratorId"], {})[cmd["id"]] = cmd
            elif (settled_at := _settled_at(cmd)) is not None:
                rm.settled_commands[cmd["id"]] = settled_at
        for oid in rm.orchestrators:
            rm._refile(oid)
        return rm

    def open_spawns(self, orchestrator_id: str) -> int:
        """Spawns on their way to ``orchestrator_id``: placement counts them as taken."""
        open_ = self.open_commands.get(orchestrator_id)
        return sum(c["kind"] == "spawn" for c in open_.values()) if open_ else 0

    # -- placement -------------------------------------------------------------

    def host_views(self, now: int, stale_after_ms: int, grace_from: int) -> list[HostView]:
        """Every orchestrator as placement sees it at ``now`` (what ``place`` is given when
        nothing in the index fits, so that its refusal names the reason)."""
        return [
            _placement.host_view(o, self.open_spawns(oid), now, stale_after_ms, grace_from)
            for oid, o in self.orchestrators.items()
        ]

    def placement_walk(
        self,
        provider: str,
        selector: dict[str, str],
        now: int,
        stale_after_ms: int,
        grace_from: int,
    ) -> list[HostView]:
        """The indexed hosts offering ``provider``, in ``place``'s order, up to the first that fits.

        Its last host fits exactly when some host in the fleet does (the index
        holds every host that could): tests/property/test_placement_index.py.
        """
        return list(
            _placement.candidates(
                self.placement, self.orchestrators, self.open_spawns, provider, selector,
                now, stale_after_ms, grace_from,
            )
        )

    def placement_candidates(
        self,
        provider: str,
        selector: dict[str, str],
        now: int,
        stale_after_ms: int,
        grace_from: int,
    ) -> list[HostView]:
        """What ``place`` needs to choose as it would over every host (ADR 0037): the walk
        when it ends on a host that fits; else the whole fleet, so the refusal names why."""
        walked = self.placement_walk(provider, selector, now, stale_after_ms, grace_from)
        if walked and walked[-1].fits(provider, selector):
            return walked
        return self.host_views(now, stale_after_ms, grace_from)

    def comparable(self) -> dict[str, Any]:
        """State for equality checks (rebuild vs live, checkpoint vs rebuild)."""
        s = self.to_state()
        return {k: v for k, v in s.items() if k != "format"}


class _Fields:
    """Attribute access over a dict, to fold an event's fields with a default added."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)


_HANDLERS: dict[str, Handler] = {
    "OrchestratorRegistered": ReadModels._orchestrator_registered,
    "OrchestratorReregistered": ReadModels._orchestrator_reregistered,
    "OrchestratorEnrolled": ReadModels._orchestrator_enrolled,
    "OrchestratorReenrolled": ReadModels._orchestrator_reenrolled,
    "OrchestratorReregisteredByHost": ReadModels._orchestrator_reregistered_by_host,
    "OrchestratorTokenRotated": ReadModels._orchestrator_token_rotated,
    "OrchestratorTokenRevoked": ReadModels._orchestrator_token_revoked,
    "OrchestratorHeartbeatReceived": ReadModels._orchestrator_heartbeat,
    "ManagedAgentsReported": ReadModels._managed_agents_reported,
    "SpawnRequested": ReadModels._spawn_requested,
    "ActionRequested": ReadModels._action_requested,
    "InputRequested": ReadModels._input_requested,
    "AgentAwaitingInput": ReadModels._agent_awaiting_input,
    "AgentInputResumed": ReadModels._agent_input_resumed,
    "CommandResultRecorded": ReadModels._command_result_recorded,
    "OrchestratorRemoved": ReadModels._orchestrator_removed,
    "OrchestratorReaped": ReadModels._orchestrator_reaped,
    "AgentRegistered": ReadModels._agent_registered,
    "AgentReregistered": ReadModels._agent_reregistered,
    "AgentHeartbeatReceived": ReadModels._agent_heartbeat,
    "AgentRemoved": ReadModels._agent_removed,
    "AgentReaped": ReadModels._agent_reaped,
    "OrchestratorCapacityDeclared": ReadModels._capacity_declared,
    "ManagedAgentsLost": ReadModels._agents_lost,
    "CommandStarted": ReadModels._command_started,
    "CommandExpired": ReadModels._command_expired,
    "SettledCommandsForgotten": ReadModels._settled_commands_forgotten,
    "ReaperCreated": ReadModels._reaper_created,
    "ReapSuspended": ReadModels._reap_suspended,
    "ReapResumed": ReadModels._reap_resumed,
}


def _attention_of(m: dict[str, Any] | None) -> dict[str, Any]:
    """A managed agent's attention fields (all null when it waits for nobody)."""
    if m is None:
        return NO_ATTENTION
    return {k: m.get(k) for k in ATTENTION_FIELDS}


def _settled_at(cmd: dict[str, Any]) -> int | None:
    """When a command that is over settled: its result's or its expiry's ``at``."""
    over = cmd.get("result") or cmd.get("expired")
    return int(over["at"]) if over else None


def _managed_view(o: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """A managed agent as ``GET /api/managed-agents`` lists it: with where it runs."""
    return {**m, "orchestratorId": o["id"], "hostname": o["hostname"], "orchestratorStatus": o["status"]}


def _active(o: dict[str, Any]) -> int:
    """Active agents: the host's reported load when it gives one, else its reported agents."""
    load = o.get("load")
    if isinstance(load, dict) and isinstance(load.get("activeAgents"), int):
        return int(load["activeAgents"])
    return len(o["managedAgents"])
_HANDLERS.update(_messages.HANDLERS)
