"""The use cases: in aggregates, out events (pending on them) and a result.

One function per command, pure: no storage, no clock, no thread. Each asks
the ``Aggregates`` port for the aggregates it needs by natural id, calls
their decisions, and returns ``(result, touched)``: the aggregates that now
hold new pending events. Time comes in on the command (``at``, ``now``).
Saving them is the writer's job (ADR 0004), loading them the port's
(``RelayApp``, relay/application.py); ADR 0030 says why the line is here.

A refusal raises a ``RelayError`` before any aggregate changed, so the
writer can answer it and carry on with the rest of the batch.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import orjson

from relay import commands as c
from relay.domain.agent import Agent
from relay.domain.errors import ConflictError, NotFoundError
from relay.domain.message import Broadcast, Message, check_fanout
from relay.domain.orchestrator import Orchestrator
from relay.domain.reaper import Reaper
from relay.domain.rules import (
    PROVIDERS,
    confine_cwd,
    orchestrator_agent_id,
    orchestrator_of_agent_id,
)

AnyAggregate = Orchestrator | Agent | Message | Broadcast | Reaper
A = TypeVar("A", Orchestrator, Agent, Message, Reaper)


class Aggregates(Protocol):
    """What a use case may ask of the aggregates: find one, add a new one.

    ``RelayApp`` implements it over its live copies and the store; a test can
    implement it over a dict.
    """

    def find(self, cls: type[A], natural_id: str, at_least: int = 0) -> A | None:
        """The current aggregate ``cls`` of ``natural_id``, or None if it never existed.

        A removed one is returned too (its history is kept). ``at_least``: the
        version the caller saw elsewhere (the read models); a copy behind it is
        loaded from the store again.
        """
        ...

    def add(self, aggregate: Any) -> None:
        """A newly created aggregate: found by ``find`` from now on."""
        ...


def decide(port: Aggregates, cmd: c.Command) -> tuple[Any, list[Any]]:
    """Decide ``cmd``: its result and the aggregates with new pending events."""
    return HANDLERS[type(cmd)](port, cmd)  # type: ignore[no-any-return]


# -- lookups every use case shares ------------------------------------------------


def orchestrator(port: Aggregates, orchestrator_id: str) -> Orchestrator:
    """The orchestrator, or NotFoundError if it never existed or was removed."""
    agg = port.find(Orchestrator, orchestrator_id)
    if agg is None or agg.removed:
        raise NotFoundError(f"no orchestrator {orchestrator_id!r}")
    return agg


def agent(port: Aggregates, agent_id: str) -> Agent:
    """The agent, or NotFoundError if it never existed or was removed."""
    agg = port.find(Agent, agent_id)
    if agg is None or agg.removed:
        raise NotFoundError(f"no agent {agent_id!r}")
    return agg


def message(port: Aggregates, message_id: str) -> Message:
    """The message, or NotFoundError if it was never sent or was forgotten (ADR 0036)."""
    agg = port.find(Message, message_id)
    if agg is None:
        raise NotFoundError(f"no message {message_id!r}")
    if agg.forgotten:
        raise NotFoundError(
            f"message {message_id!r} was settled and forgotten after --keep-settled; "
            "the log keeps its history"
        )
    return agg


def orchestrator_of_agent(port: Aggregates, agent_id: str) -> Orchestrator | None:
    """The orchestrator whose own agent record ``agent_id`` is, if any (and not removed)."""
    oid = orchestrator_of_agent_id(agent_id)
    if oid is None:
        return None
    o = port.find(Orchestrator, oid)
    return None if o is None or o.removed else o


def agent_present(port: Aggregates, agent_id: str) -> bool:
    """Whether an inbox exists for ``agent_id`` (an orchestrator's own agent included)."""
    if orchestrator_of_agent(port, agent_id) is not None:
        return True
    a = port.find(Agent, agent_id)
    return a is not None and not a.removed


# -- the use cases ------------------------------------------------------------------


def register_orchestrator(port: Aggregates, cmd: c.RegisterOrchestrator) -> tuple[Any, list[Any]]:
    agg = port.find(Orchestrator, cmd.orchestrator_id)
    reg = cmd.registration
    fields = {**reg.event_fields(), "token_hash": cmd.token_hash, "at": cmd.at}
    if agg is None:
        agg = Orchestrator(orchestrator_id=cmd.orchestrator_id, **fields)
        port.add(agg)
    else:
        agg.reregister(**fields)
    agg.declare_capacity(reg.max_agents, dict(reg.labels or {}), cmd.at)
    return None, [agg]


def reregister_own_orchestrator(port: Aggregates, cmd: c.ReregisterOwnOrchestrator) -> tuple[Any, list[Any]]:
    """A host re-registering itself: confined to the baseDir an admin granted it."""
    agg = orchestrator(port, cmd.orchestrator_id)
    reg = cmd.registration
    agg.reregister_by_host(**reg.event_fields(), token_hash=cmd.token_hash, at=cmd.at)
    agg.declare_capacity(reg.max_agents, dict(reg.labels or {}), cmd.at)
    return None, [agg]


def enroll_orchestrator(port: Aggregates, cmd: c.EnrollOrchestrator) -> tuple[Any, list[Any]]:
    """Grant a host a baseDir and a fresh token; a known one keeps what is not given."""
    agg = port.find(Orchestrator, cmd.orchestrator_id)
    if agg is None:
        agg = Orchestrator.enroll_new(
            orchestrator_id=cmd.orchestrator_id,
            hostname=cmd.hostname or cmd.orchestrator_id,
            base_dir=cmd.base_dir,
            providers=cmd.providers or list(PROVIDERS),
            token_hash=cmd.token_hash,
            at=cmd.at,
        )
        port.add(agg)
        return None, [agg]
    fresh = agg.removed
    agg.reenroll(
        hostname=cmd.hostname or (cmd.orchestrator_id if fresh else agg.hostname),
        base_dir=cmd.base_dir,
        providers=cmd.providers or (list(PROVIDERS) if fresh else agg.providers),
        token_hash=cmd.token_hash,
        at=cmd.at,
    )
    return None, [agg]


def rotate_orchestrator_token(port: Aggregates, cmd: c.RotateOrchestratorToken) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.rotate_token(cmd.token_hash, cmd.at)
    return None, [agg]


def revoke_orchestrator_token(port: Aggregates, cmd: c.RevokeOrchestratorToken) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    return None, [agg] if agg.revoke_token(cmd.at) else []


def heartbeat_orchestrator(port: Aggregates, cmd: c.HeartbeatOrchestrator) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.heartbeat(cmd.at, cmd.load)
    return None, [agg]


def report_managed_agents(port: Aggregates, cmd: c.ReportManagedAgents) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.report_managed_agents(cmd.agents, cmd.at)
    return None, [agg]


def request_spawn(port: Aggregates, cmd: c.RequestSpawn) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.request_spawn(
        cmd.command_id,
        cmd.provider,
        cmd.cwd,
        cmd.label,
        cmd.approval_mode,
        cmd.prompt,
        cmd.requested_by,
        cmd.at,
        cmd.stale_after_ms,
        cmd.grace_from,
        cmd.deadline_at,
        worktree=cmd.worktree,
        resume=cmd.resume,
    )
    control: dict[str, Any] = {
        "action": "spawn",
        "commandId": cmd.command_id,
        "provider": cmd.provider,
        "cwd": confine_cwd(agg.base_dir, cmd.cwd),
        "label": cmd.label,
        "approvalMode": cmd.approval_mode,
        "prompt": cmd.prompt,
        "requestedBy": cmd.requested_by,
        "requestedAt": cmd.at,
    }
    if cmd.worktree is not None:
        control["worktree"] = cmd.worktree
    if cmd.resume is not None:
        control["resume"] = cmd.resume
    note = _control_message(port, cmd.orchestrator_id, cmd.command_id, control, cmd.at)
    return cmd.command_id, [agg, note]


def request_action(port: Aggregates, cmd: c.RequestAction) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.request_action(
        cmd.command_id,
        cmd.action,
        cmd.agent_id,
        cmd.requested_by,
        cmd.at,
        cmd.stale_after_ms,
        cmd.grace_from,
        cmd.deadline_at,
        remove_worktree=cmd.remove_worktree,
    )
    control: dict[str, Any] = {
        "action": cmd.action,
        "commandId": cmd.command_id,
        "agentId": cmd.agent_id,
        "provider": None,
        "cwd": None,
        "label": None,
        "approvalMode": None,
        "prompt": None,
        "requestedBy": cmd.requested_by,
        "requestedAt": cmd.at,
    }
    if cmd.remove_worktree:
        control["removeWorktree"] = True
    note = _control_message(port, cmd.orchestrator_id, cmd.command_id, control, cmd.at)
    return cmd.command_id, [agg, note]


def request_input(port: Aggregates, cmd: c.RequestInput) -> tuple[Any, list[Any]]:
    """Type text into an agent (ADR 0033): a command like restart, with its text in the log."""
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.request_input(
        cmd.command_id,
        cmd.agent_id,
        cmd.text,
        cmd.enter,
        cmd.requested_by,
        cmd.at,
        cmd.stale_after_ms,
        cmd.grace_from,
        cmd.deadline_at,
    )
    control = {
        "action": "input",
        "commandId": cmd.command_id,
        "agentId": cmd.agent_id,
        "provider": None,
        "cwd": None,
        "label": None,
        "approvalMode": None,
        "prompt": None,
        "text": cmd.text,
        "enter": cmd.enter,
        "requestedBy": cmd.requested_by,
        "requestedAt": cmd.at,
    }
    note = _control_message(port, cmd.orchestrator_id, cmd.command_id, control, cmd.at)
    return cmd.command_id, [agg, note]


def report_attention(port: Aggregates, cmd: c.ReportAttention) -> tuple[Any, list[Any]]:
    """The host's word on whether an agent waits for a person (ADR 0032); a repeat records nothing."""
    agg = orchestrator(port, cmd.orchestrator_id)
    changed = agg.report_attention(cmd.agent_id, cmd.attention, cmd.reason, cmd.excerpt, cmd.at)
    return changed, [agg] if changed else []


def _control_message(
    port: Aggregates, orchestrator_id: str, command_id: str, control: dict[str, Any], at: int
) -> Message:
    """The command, also as an urgent system message in ``orchestrator-<id>``'s inbox.

    Returned beside the orchestrator, so the writer saves both in one
    transaction: the command and its message exist together or not at all.
    The message id is the command id (its own aggregate namespace).
    """
    inbox = orchestrator_agent_id(orchestrator_id)
    target = control.get("agentId") or "all agents"
    subject = (
        f"spawn {control['provider']}" if control["action"] == "spawn" else f"{control['action']} {target}"
    )
    msg = Message(
        message_id=command_id,
        sender=control["requestedBy"],
        to=inbox,
        recipient=inbox,
        message_type="system",
        subject=subject,
        body=f"orchestrator control: {subject} (command {command_id})",
        meta={"priority": "urgent", "orchestratorControl": control},
        broadcast_id=None,
        at=at,
    )
    port.add(msg)
    return msg


def record_command_result(port: Aggregates, cmd: c.RecordCommandResult) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.record_command_result(cmd.command_id, cmd.status, cmd.error, cmd.agent_id, cmd.at)
    # The command's control message (same id) is settled in the same
    # transaction, so orchestrator inboxes do not fill with done requests.
    note = port.find(Message, cmd.command_id)
    if note is not None and note.settle(cmd.at):
        return cmd.command_id, [agg, note]
    return cmd.command_id, [agg]


def start_command(port: Aggregates, cmd: c.StartCommand) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    return cmd.command_id, ([agg] if agg.start_command(cmd.command_id, cmd.at) else [])


def _expire(
    port: Aggregates, agg: Orchestrator, command_ids: list[str], reason: str, at: int
) -> tuple[list[str], list[Any]]:
    """End commands and settle their control messages in the same transaction."""
    ended = agg.expire_commands(command_ids, reason, at)
    notes = []
    for cid in ended:
        note = port.find(Message, cid)
        if note is not None and note.settle(at):
            notes.append(note)
    return ended, notes


def reaper(port: Aggregates, at: int) -> Reaper:
    agg = port.find(Reaper, "")  # type: ignore[arg-type]
    if agg is None:
        agg = Reaper(at=at)
        port.add(agg)
    return agg  # type: ignore[no-any-return]


def suspend_reaping(port: Aggregates, cmd: c.SuspendReaping) -> tuple[Any, list[Any]]:
    agg = reaper(port, cmd.at)
    return None, ([agg] if agg.suspend(cmd.would_reap, cmd.online, cmd.at) else [])


def resume_reaping(port: Aggregates, cmd: c.ResumeReaping) -> tuple[Any, list[Any]]:
    agg = reaper(port, cmd.at)
    return None, ([agg] if agg.resume(cmd.at) else [])


def remove_orchestrator(port: Aggregates, cmd: c.RemoveOrchestrator) -> tuple[Any, list[Any]]:
    agg = orchestrator(port, cmd.orchestrator_id)
    agg.remove(cmd.at)
    return None, [agg]


def register_agent(port: Aggregates, cmd: c.RegisterAgent) -> tuple[Any, list[Any]]:
    agg = port.find(Agent, cmd.agent_id)
    fields = {
        "name": cmd.name,
        "label": cmd.label,
        "tags": cmd.tags,
        "machine": cmd.machine,
        "capabilities": cmd.capabilities,
        "meta": cmd.meta,
        "at": cmd.at,
    }
    if agg is None:
        agg = Agent(agent_id=cmd.agent_id, **fields)
        port.add(agg)
    else:
        agg.reregister(**fields)
    return None, [agg]


def heartbeat_agent(port: Aggregates, cmd: c.HeartbeatAgent) -> tuple[Any, list[Any]]:
    """An orchestrator is also an agent: a beat on its agent id is the orchestrator's."""
    own = orchestrator_of_agent(port, cmd.agent_id)
    if own is not None:
        return heartbeat_orchestrator(port, c.HeartbeatOrchestrator(own.orchestrator_id, cmd.at))
    agg = agent(port, cmd.agent_id)
    agg.heartbeat(cmd.at)
    return None, [agg]


def remove_agent(port: Aggregates, cmd: c.RemoveAgent) -> tuple[Any, list[Any]]:
    """An orchestrator's own agent record goes only with the orchestrator."""
    own = orchestrator_of_agent(port, cmd.agent_id)
    if own is not None:
        raise ConflictError(
            f"agent {cmd.agent_id!r} is orchestrator {own.orchestrator_id!r}'s own record; "
            "remove the orchestrator instead"
        )
    agg = agent(port, cmd.agent_id)
    agg.remove(cmd.at)
    return None, [agg]


def reap(port: Aggregates, cmd: c.Reap) -> tuple[c.ReapResult, list[Any]]:
    """Record a reap for each candidate that is *still* as the reaper judged it.

    The reaper decided from the read model; anything that happened to an
    entity since (a heartbeat, a registration) moved its version, and then
    that entity is skipped: the heartbeat wins the race.
    """
    touched: list[Any] = []
    agents: list[str] = []
    orchestrators: list[str] = []
    for cand in cmd.candidates:
        cls = Agent if cand.kind == "agent" else Orchestrator
        # A live copy behind what the reaper saw (another relay node wrote
        # it) is loaded again: judge the stored state, not the stale copy.
        agg = port.find(cls, cand.entity_id, at_least=cand.version)
        if agg is None or agg.version != cand.version:
            continue
        if agg.reap(cmd.now, cand.last_seen, cmd.stale_after_ms, cmd.grace_from):
            touched.append(agg)
            (agents if cand.kind == "agent" else orchestrators).append(cand.entity_id)
    released: list[str] = []
    for claim in cmd.expired_claims:
        msg = port.find(Message, claim.message_id, at_least=claim.version)
        if msg is None or msg.version != claim.version:
            continue
        if msg.expire(cmd.now, claim.claim_id):
            touched.append(msg)
            released.append(claim.message_id)
    return c.ReapResult(agents, orchestrators, released), touched


def expire_commands(port: Aggregates, cmd: c.ExpireCommands) -> tuple[c.ReapResult, list[Any]]:
    """End what can no longer happen: commands past their deadline, the pending commands
    of hosts that went offline, and the agents of hosts offline longer than lost-after.

    Its own command, after the reap's: a reap records statuses only
    (invariant 8), and each of these re-checks the live aggregate.
    """
    touched: list[Any] = []
    expired_commands: list[str] = []
    lost: list[str] = []
    for oid in cmd.overdue:
        o = port.find(Orchestrator, oid)
        if o is None or o.removed:
            continue
        ended, notes = _expire(port, o, o.overdue_commands(cmd.now), "deadline passed", cmd.now)
        if ended:
            expired_commands.extend(ended)
            touched.extend([o, *notes])
    for oid in cmd.offline:
        o = port.find(Orchestrator, oid)
        if o is None or o.status != "offline":
            continue
        ended, notes = _expire(port, o, o.pending_commands(), "orchestrator offline", cmd.now)
        expired_commands.extend(ended)
        touched.extend(notes)
        if o.mark_agents_lost(cmd.now, cmd.lost_after_ms):
            lost.append(oid)
        if ended or oid in lost:
            touched.append(o)
    unique = list({id(a): a for a in touched}.values())  # an aggregate is saved once
    return c.ReapResult([], [], [], expired_commands, lost), unique


# -- messages --------------------------------------------------------------------


def send_message(port: Aggregates, cmd: c.SendMessage) -> tuple[list[str], list[Any]]:
    """A direct message is one Message; a broadcast is its content once (a Broadcast)
    and a small Message per recipient naming it, all in one transaction (ADR 0010, 0014).

    The HTTP edge resolved ``to`` into recipients from the read model; we
    re-check each here. A direct message to a missing agent is refused; a
    broadcast skips recipients removed since, and is refused only when
    none is left, or when its copies together are over the fan-out limit.
    """
    present = [d for d in cmd.deliveries if agent_present(port, d.recipient)]
    if not present:
        if cmd.broadcast_id is None and cmd.deliveries:
            raise NotFoundError(f"no agent {cmd.deliveries[0].recipient!r}")
        raise NotFoundError(f"no agent matches {cmd.to!r}")
    if cmd.broadcast_id is None and len(present) != len(cmd.deliveries):
        raise NotFoundError(f"no agent {cmd.deliveries[0].recipient!r}")
    if cmd.broadcast_id is None:
        d = present[0]
        msg = Message(
            message_id=d.message_id,
            sender=cmd.sender,
            to=cmd.to,
            recipient=d.recipient,
            message_type=cmd.message_type,
            subject=cmd.subject,
            body=cmd.body,
            meta=cmd.meta,
            broadcast_id=None,
            at=cmd.at,
        )
        port.add(msg)
        return [d.message_id], [msg]
    check_fanout(len(present), content_bytes(cmd))
    broadcast = Broadcast(
        broadcast_id=cmd.broadcast_id,
        sender=cmd.sender,
        to=cmd.to,
        message_type=cmd.message_type,
        subject=cmd.subject,
        body=cmd.body,
        meta=cmd.meta,
        recipient_count=len(present),
        at=cmd.at,
    )
    copies = [Message.deliver(d.message_id, d.recipient, cmd.broadcast_id, cmd.at) for d in present]
    for agg in (broadcast, *copies):  # the Broadcast first: its event precedes the copies'
        port.add(agg)
    return [d.message_id for d in present], [broadcast, *copies]


def claim_message(port: Aggregates, cmd: c.ClaimMessage) -> tuple[Any, list[Any]]:
    msg = message(port, cmd.message_id)
    msg.claim(cmd.agent_id, cmd.claim_id, cmd.lease_ms, cmd.at)
    return cmd.message_id, [msg]


def ack_message(port: Aggregates, cmd: c.AckMessage) -> tuple[Any, list[Any]]:
    msg = message(port, cmd.message_id)
    msg.ack(cmd.agent_id, cmd.claim_id, cmd.at)
    return cmd.message_id, [msg]


def release_message(port: Aggregates, cmd: c.ReleaseMessage) -> tuple[Any, list[Any]]:
    msg = message(port, cmd.message_id)
    msg.release(cmd.agent_id, cmd.claim_id, cmd.at)
    return cmd.message_id, [msg]


def delete_message(port: Aggregates, cmd: c.DeleteMessage) -> tuple[Any, list[Any]]:
    msg = message(port, cmd.message_id)
    msg.delete(cmd.requested_by, cmd.at)
    return cmd.message_id, [msg]


def forget_settled(port: Aggregates, cmd: c.ForgetSettled) -> tuple[c.ForgetResult, list[Any]]:
    """Record that settled commands and messages leave memory (ADR 0036).

    The read model chose them (settled longer than keep-settled ago); each
    aggregate re-checks that what it forgets is settled, so an open command
    or message is never forgotten. The forgotten messages leave the port's
    live copies once their event is stored (``RelayApp``).
    """
    touched: list[Any] = []
    commands: list[str] = []
    messages: list[str] = []
    for oid, cids in cmd.commands:
        o = port.find(Orchestrator, oid)
        if o is None or o.removed:
            continue
        gone = o.forget_settled_commands(list(cids), cmd.now)
        if gone:
            commands.extend(gone)
            touched.append(o)
    for mid in cmd.message_ids:
        msg = port.find(Message, mid)
        if msg is not None and msg.forget(cmd.now):
            messages.append(mid)
            touched.append(msg)
    return c.ForgetResult(commands, messages), touched


def content_bytes(cmd: c.SendMessage) -> int:
    """What one copy of a message carries: body, subject and meta, as encoded in JSON."""
    return len(orjson.dumps([cmd.body, cmd.subject, cmd.meta]))


HANDLERS: dict[type, Any] = {
    c.RegisterOrchestrator: register_orchestrator,
    c.ReregisterOwnOrchestrator: reregister_own_orchestrator,
    c.EnrollOrchestrator: enroll_orchestrator,
    c.RotateOrchestratorToken: rotate_orchestrator_token,
    c.RevokeOrchestratorToken: revoke_orchestrator_token,
    c.HeartbeatOrchestrator: heartbeat_orchestrator,
    c.ReportManagedAgents: report_managed_agents,
    c.RequestSpawn: request_spawn,
    c.RequestAction: request_action,
    c.RequestInput: request_input,
    c.ReportAttention: report_attention,
    c.RecordCommandResult: record_command_result,
    c.StartCommand: start_command,
    c.SuspendReaping: suspend_reaping,
    c.ResumeReaping: resume_reaping,
    c.RemoveOrchestrator: remove_orchestrator,
    c.RegisterAgent: register_agent,
    c.HeartbeatAgent: heartbeat_agent,
    c.RemoveAgent: remove_agent,
    c.Reap: reap,
    c.ExpireCommands: expire_commands,
    c.ForgetSettled: forget_settled,
    c.SendMessage: send_message,
    c.ClaimMessage: claim_message,
    c.AckMessage: ack_message,
    c.ReleaseMessage: release_message,
    c.DeleteMessage: delete_message,
}
