"""Commands: what a client asks the relay to do, as plain frozen values.

The HTTP edge turns JSON into these (checking shape); the application executes
them against aggregates (checking existence and rules). Every command carries
``at``, the server's receive time in epoch ms, because the domain never reads
the clock.
"""

from __future__ import annotations

from typing import Any, Self

from attrs import field, frozen

from relay.wire.shapes import OrchestratorRegistration


@frozen
class _Registration:
    """A registration as declared on the wire (ADR 0029), passed through whole: a field added
    to ``OrchestratorRegistration`` reaches the application without a change here."""

    registration: OrchestratorRegistration
    token_hash: str
    at: int

    @property
    def orchestrator_id(self) -> str:
        return self.registration.id

    @classmethod
    def of(
        cls,
        orchestrator_id: str,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        token_hash: str,
        at: int,
        max_agents: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> Self:
        """Built from fields rather than from a request (tests, benchmarks, tools)."""
        registration = OrchestratorRegistration(
            id=orchestrator_id,
            hostname=hostname,
            base_dir=base_dir,
            providers=providers,
            env_keys=env_keys,
            meta=meta,
            max_agents=max_agents,
            labels=labels,
        )
        return cls(registration, token_hash, at)


@frozen
class RegisterOrchestrator(_Registration):
    """An admin registers a host (again: updates it and rotates its token)."""


@frozen
class ReregisterOwnOrchestrator(_Registration):
    """A host re-registering itself with its orchestrator token (``token_hash`` is that token's)."""


@frozen
class EnrollOrchestrator:
    """An admin grants a host a baseDir and a token; None keeps (or defaults) the field."""

    orchestrator_id: str
    hostname: str | None
    base_dir: str
    providers: list[str] | None
    token_hash: str
    at: int


@frozen
class RotateOrchestratorToken:
    orchestrator_id: str
    token_hash: str
    at: int


@frozen
class RevokeOrchestratorToken:
    orchestrator_id: str
    at: int


@frozen
class HeartbeatOrchestrator:
    orchestrator_id: str
    at: int
    load: dict[str, Any] | None = None


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
    # Liveness judged at ``at`` (None: by the recorded status alone).
    stale_after_ms: int | None = None
    grace_from: int = 0
    deadline_at: int | None = None
    # ADR 0034: run it in a new git worktree ({"branch": name or None}) and/or
    # resume a provider session by its id. None: not asked for.
    worktree: dict[str, Any] | None = None
    resume: str | None = None


@frozen
class RequestAction:
    orchestrator_id: str
    command_id: str
    action: str
    agent_id: str | None
    requested_by: str
    at: int
    stale_after_ms: int | None = None
    grace_from: int = 0
    deadline_at: int | None = None
    # A shutdown that also removes the agent's worktree if it is clean (ADR 0034).
    remove_worktree: bool = False


@frozen
class RequestInput:
    """Type ``text`` into a managed agent's terminal, then Enter unless ``enter`` is False."""

    orchestrator_id: str
    command_id: str
    agent_id: str
    text: str
    enter: bool
    requested_by: str
    at: int
    stale_after_ms: int | None = None
    grace_from: int = 0
    deadline_at: int | None = None


@frozen
class ReportAttention:
    """The host says a managed agent waits for a person, sits idle, or (None) moved on."""

    orchestrator_id: str
    agent_id: str
    attention: str | None
    reason: str
    excerpt: str
    at: int


@frozen
class StartCommand:
    """The host says it started a command (``running``), so a slow start is not a lost one."""

    orchestrator_id: str
    command_id: str
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
class ExpiredClaim:
    """One message claim the reaper judged over, with what it saw when it judged."""

    message_id: str
    claim_id: str
    version: int


@frozen
class Reap:
    now: int
    stale_after_ms: int
    grace_from: int
    candidates: tuple[ReapCandidate, ...] = field(factory=tuple)
    expired_claims: tuple[ExpiredClaim, ...] = field(factory=tuple)


@frozen
class ExpireCommands:
    """Orchestrators with commands past their deadline, and offline ones with pending
    commands or agents that may now be lost, as the read model saw them at ``now``;
    each aggregate re-checks."""

    now: int
    overdue: tuple[str, ...] = field(factory=tuple)
    offline: tuple[str, ...] = field(factory=tuple)
    lost_after_ms: int = 300_000


@frozen
class ForgetSettled:
    """Settled commands (by orchestrator) and settled messages over for longer than
    keep-settled at ``now``, as the read model saw them (ADR 0036); each aggregate
    re-checks that what it forgets is settled."""

    now: int
    commands: tuple[tuple[str, tuple[str, ...]], ...] = field(factory=tuple)
    message_ids: tuple[str, ...] = field(factory=tuple)


@frozen
class ForgetResult:
    command_ids: list[str]
    message_ids: list[str]


@frozen
class ReapResult:
    reaped_agent_ids: list[str]
    reaped_orchestrator_ids: list[str]
    released_message_ids: list[str] = field(factory=list)
    expired_command_ids: list[str] = field(factory=list)
    lost_orchestrator_ids: list[str] = field(factory=list)
    suspended: bool = False


@frozen
class SuspendReaping:
    would_reap: int
    online: int
    at: int


@frozen
class ResumeReaping:
    at: int


@frozen
class Delivery:
    """One recipient's copy of a message: its id and the agent whose inbox it goes to."""

    message_id: str
    recipient: str


@frozen
class SendMessage:
    """Deliver one message to each recipient (one for a direct message, several for a broadcast)."""

    sender: str
    to: str
    message_type: str
    subject: str | None
    body: str
    meta: dict[str, Any]
    broadcast_id: str | None
    deliveries: tuple[Delivery, ...]
    at: int


@frozen
class ClaimMessage:
    message_id: str
    agent_id: str
    claim_id: str
    lease_ms: int
    at: int


@frozen
class AckMessage:
    message_id: str
    agent_id: str
    claim_id: str | None
    at: int


@frozen
class ReleaseMessage:
    message_id: str
    agent_id: str
    claim_id: str | None
    at: int


@frozen
class DeleteMessage:
    message_id: str
    requested_by: str
    at: int


Command = (
    RegisterOrchestrator
    | ReregisterOwnOrchestrator
    | EnrollOrchestrator
    | RotateOrchestratorToken
    | RevokeOrchestratorToken
    | HeartbeatOrchestrator
    | ReportManagedAgents
    | RequestSpawn
    | RequestAction
    | RequestInput
    | ReportAttention
    | RecordCommandResult
    | StartCommand
    | SuspendReaping
    | ResumeReaping
    | RemoveOrchestrator
    | RegisterAgent
    | HeartbeatAgent
    | RemoveAgent
    | Reap
    | ExpireCommands
    | ForgetSettled
    | SendMessage
    | ClaimMessage
    | AckMessage
    | ReleaseMessage
    | DeleteMessage
)
