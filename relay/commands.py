"""Commands: what a client asks the relay to do, as plain frozen values.

The HTTP edge turns JSON into these (checking shape); the application executes
them against aggregates (checking existence and rules). Every command carries
``at``, the server's receive time in epoch ms, because the domain never reads
the clock.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen


@frozen
class RegisterOrchestrator:
    orchestrator_id: str
    hostname: str
    base_dir: str
    providers: list[str]
    env_keys: list[str]
    meta: dict[str, Any]
    token_hash: str
    at: int


@frozen
class HeartbeatOrchestrator:
    orchestrator_id: str
    at: int


@frozen
class ReportManagedAgents:
    orchestrator_id: str
    agents: list[dict[str, Any]]
    at: int


@frozen
class RequestSpawn:
    orchestrator_id: str
    command_id: str
    provider: str
    cwd: str | None
    label: str | None
    approval_mode: str
    prompt: str | None
    requested_by: str
    at: int


@frozen
class RequestAction:
    orchestrator_id: str
    command_id: str
    action: str
    agent_id: str | None
    requested_by: str
    at: int


@frozen
class RecordCommandResult:
    orchestrator_id: str
    command_id: str
    status: str
    error: str | None
    agent_id: str | None
    at: int


@frozen
class RemoveOrchestrator:
    orchestrator_id: str
    at: int


@frozen
class RegisterAgent:
    agent_id: str
    name: str
    label: str | None
    tags: list[str]
    machine: str | None
    capabilities: list[str]
    meta: dict[str, Any]
    at: int


@frozen
class HeartbeatAgent:
    agent_id: str
    at: int


@frozen
class RemoveAgent:
    agent_id: str
    at: int


@frozen
class ReapCandidate:
    """One entity the reaper judged stale, with what it saw when it judged."""

    kind: str  # "agent" or "orchestrator"
    entity_id: str
    last_seen: int
    version: int


@frozen
class Reap:
    now: int
    stale_after_ms: int
    grace_from: int
    candidates: tuple[ReapCandidate, ...] = field(factory=tuple)


@frozen
class ReapResult:
    reaped_agent_ids: list[str]
    reaped_orchestrator_ids: list[str]


Command = (
    RegisterOrchestrator
    | HeartbeatOrchestrator
    | ReportManagedAgents
    | RequestSpawn
    | RequestAction
    | RecordCommandResult
    | RemoveOrchestrator
    | RegisterAgent
    | HeartbeatAgent
    | RemoveAgent
    | Reap
)
