"""The application: one method per use case, over live aggregates.

Aggregates stay in memory once loaded (``live``), so a heartbeat costs the
same on an entity with 100,000 earlier events as on a fresh one; the library's
snapshots only speed up the first load after a restart. ``execute`` decides
and leaves the new events pending on the aggregates; saving is the writer's
job, so that commands that arrive together commit together (ADR 0004).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar
from uuid import UUID

import orjson
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import PersistenceError, Transcoder
from eventsourcing.utils import EnvType

from relay import commands as c
from relay.domain.agent import Agent
from relay.domain.errors import NotFoundError, StoreUnavailableError
from relay.domain.message import ACKED, DELETED, Broadcast, Message, check_fanout
from relay.domain.orchestrator import Orchestrator
from relay.domain.reaper import Reaper
from relay.domain.rules import (
    ORCHESTRATOR_AGENT_PREFIX,
    PROVIDERS,
    confine_cwd,
    orchestrator_agent_id,
)
from relay.domain.seal import LogSeal  # noqa: F401  (its stored topics must resolve)
from relay.store.transcoder import OrjsonTranscoder

log = logging.getLogger(__name__)

AnyAggregate = Orchestrator | Agent | Message | Broadcast
EVICT_EVERY_MS = 60_000  # how often (domain time) settled messages are looked for


class RelayApp(Application):
    """The relay's use cases; synchronous, driven by exactly one writer thread."""

    name = "Relay"
    snapshotting_intervals: ClassVar[dict[type[Aggregate], int]] = {
        Orchestrator: 500,
        Agent: 500,
    }
    log_section_size = 10_000

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        self.live: dict[UUID, AnyAggregate] = {}
        # The newest version of an aggregate that the log is known to hold (the
        # read models' view). With several relay nodes on one log, another node
        # may have written since we loaded our live copy; then we load it again
        # rather than decide (or refuse) on stale state.
        self.known_version: Callable[[UUID], int | None] | None = None
        # Settled messages leave ``live`` after this long (domain time; None: never).
        # They stay in the log; a later command that names one loads it again.
        self.keep_settled_ms: int | None = None
        self._settled: dict[UUID, int] = {}  # message aggregate id -> when it settled
        self._forgotten: set[UUID] = set()  # messages forgotten (ADR 0036), to leave ``live``
        self._next_eviction = 0

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    def save(self, *objs: Any, **kwargs: Any) -> list[Any]:
        """``Application.save`` for our aggregates, without its runtime-protocol checks.

        The library's ``ProcessingEvent.collect_events`` asks ``isinstance`` of
        two ``typing.Protocol`` classes for every object saved, which costs tens
        of µs each on Python 3.11: about a third of the writer's time per
        heartbeat under group commit (docs/benchmarks.md). Ours are all
        ``Aggregate`` subclasses, so we collect their events directly; anything
        else (or keyword arguments) takes the library's own path.
        """
        if kwargs or not all(isinstance(o, Aggregate) for o in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[Any] = ProcessingEvent()
        events = processing_event.events
        aggregates = processing_event.aggregates
        for agg in objs:
            events.extend(agg.collect_events())
            aggregates[agg.id] = agg
        recordings = self._record(processing_event)
        if self._forgotten:
            self._drop_forgotten()
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, kept for parity
        return recordings

    def _take_snapshots(self, processing_event: ProcessingEvent[Any]) -> None:
        """Snapshot the live aggregate instead of re-reading it from the store.

        The library's default replays the aggregate from the store to snapshot
        it, which costs an extra read on the write path; ours is already here.
        A failed snapshot only slows a later load, so it must not fail a
        write that already committed.
        """
        if self.snapshots is None:
            return
        due: dict[UUID, Aggregate] = {}
        for ev in processing_event.events:
            agg = processing_event.aggregates.get(ev.originator_id)
            if agg is None:
                continue
            interval = self.snapshotting_intervals.get(type(agg))
            if interval and ev.originator_version % interval == 0:
                due[agg.id] = agg  # type: ignore[assignment]
        if not due:
            return
        try:
            self.snapshots.put([Snapshot.take(agg) for agg in due.values()])
        except Exception:
            log.warning("could not store snapshots", exc_info=True)

    # -- loading -------------------------------------------------------------

    def _get(self, cls: type[Orchestrator] | type[Agent] | type[Message], natural_id: str) -> Any:
        aggregate_id = cls.create_id(natural_id)
        agg = self.live.get(aggregate_id)
        # Never swap out a copy with undecided-upon pending events (an earlier
        # command of this batch): they would be lost while that command is
        # answered. Its save then clashes, and the writer decides the batch again.
        if agg is not None and self.known_version is not None and not agg.pending_events:
            known = self.known_version(aggregate_id)
            if known is not None and known > agg.version:
                del self.live[aggregate_id]
                agg = None
        if agg is None:
            try:
                agg = self.repository.get(aggregate_id)
            except PersistenceError as e:
                raise StoreUnavailableError(
                    f"the event store cannot be read right now ({type(e).__name__}: {e}); retry later"
                ) from e
            except Exception as e:  # AggregateNotFoundError, without importing its home
                if type(e).__name__ != "AggregateNotFoundError":
                    raise
                return None
            self.live[aggregate_id] = agg
        return agg

    def orchestrator(self, orchestrator_id: str) -> Orchestrator:
        """The live orchestrator, or NotFoundError if it never existed or was removed."""
        agg = self._get(Orchestrator, orchestrator_id)
        if agg is None or agg.removed:
            raise NotFoundError(f"no orchestrator {orchestrator_id!r}")
        return agg  # type: ignore[no-any-return]

    def agent(self, agent_id: str) -> Agent:
        """The live agent, or NotFoundError if it never existed or was removed."""
        agg = self._get(Agent, agent_id)
        if agg is None or agg.removed:
            raise NotFoundError(f"no agent {agent_id!r}")
        return agg  # type: ignore[no-any-return]

    def message(self, message_id: str) -> Message:
        """The live message, or NotFoundError if it was never sent or was forgotten."""
        agg = self._get(Message, message_id)
        if agg is None:
            raise NotFoundError(f"no message {message_id!r}")
        if agg.forgotten:
            raise NotFoundError(
                f"message {message_id!r} was settled and forgotten after --keep-settled; "
                "the log keeps its history"
            )
        return agg  # type: ignore[no-any-return]

    def agent_present(self, agent_id: str) -> bool:
        """Whether an inbox exists for ``agent_id`` (an orchestrator's own agent included)."""
        if agent_id.startswith(ORCHESTRATOR_AGENT_PREFIX):
            o = self._get(Orchestrator, agent_id[len(ORCHESTRATOR_AGENT_PREFIX) :])
            if o is not None and not o.removed:
                return True
        a = self._get(Agent, agent_id)
        return a is not None and not a.removed

    def forget(self, aggregate_ids: list[UUID]) -> None:
        """Drop live copies whose pending state never reached the store."""
        for aggregate_id in aggregate_ids:
            self.live.pop(aggregate_id, None)

    def forget_pending(self) -> None:
        """Drop every live copy that holds events not yet stored.

        For when a decision failed part-way: which aggregates it had changed is
        unknown, and a copy ahead of the log must never be decided on again.
        """
        self.forget([i for i, agg in self.live.items() if agg.pending_events])

    # -- use cases -----------------------------------------------------------

    def execute(self, cmd: c.Command) -> tuple[Any, list[AnyAggregate]]:
        """Decide ``cmd``: returns its result and the aggregates with new pending events.

        Raises a RelayError (and leaves every aggregate untouched) when refused.
        """
        handler = _HANDLERS[type(cmd)]
        result, touched = handler(self, cmd)
        at = getattr(cmd, "at", None) or getattr(cmd, "now", None)
        if isinstance(at, int):
            for agg in touched:
                if isinstance(agg, Message) and agg.status in (ACKED, DELETED):
                    self._settled.setdefault(agg.id, at)
            if self.keep_settled_ms is not None and at >= self._next_eviction:
                self._next_eviction = at + EVICT_EVERY_MS
                self.evict_settled(at)
        return result, touched

    def evict_settled(self, now: int) -> list[UUID]:
        """Drop settled messages from ``live`` once ``keep_settled_ms`` has passed.

        Memory stays flat however many messages a relay has carried; nothing
        leaves the log. A copy with pending events is never dropped.
        """
        keep = self.keep_settled_ms
        if keep is None:
            return []
        gone = [
            mid
            for mid, at in self._settled.items()
            if now - at >= keep
            and (agg := self.live.get(mid)) is not None
            and not agg.pending_events
        ]
        for mid in gone:
            del self.live[mid]
            del self._settled[mid]
        for mid in [m for m in self._settled if m not in self.live]:
            del self._settled[mid]
        return gone + self._drop_forgotten()

    def _drop_forgotten(self) -> list[UUID]:
        """Forgotten messages (ADR 0036) leave ``live`` once their ``Forgotten`` is stored."""
        gone = []
        for mid in list(self._forgotten):
            agg = self.live.get(mid)
            if agg is None or not agg.pending_events:
                self._forgotten.discard(mid)
                self._settled.pop(mid, None)
                if self.live.pop(mid, None) is not None:
                    gone.append(mid)
        return gone

    def register_orchestrator(self, cmd: c.RegisterOrchestrator) -> tuple[Any, list[Any]]:
        agg = self._get(Orchestrator, cmd.orchestrator_id)
        reg = cmd.registration
        fields = {**reg.event_fields(), "token_hash": cmd.token_hash, "at": cmd.at}
        if agg is None:
            agg = Orchestrator(orchestrator_id=cmd.orchestrator_id, **fields)
            self.live[agg.id] = agg
        else:
            agg.reregister(**fields)
        agg.declare_capacity(reg.max_agents, dict(reg.labels or {}), cmd.at)
        return None, [agg]

    def reregister_own_orchestrator(
        self, cmd: c.ReregisterOwnOrchestrator
    ) -> tuple[Any, list[Any]]:
        """A host re-registering itself: confined to the baseDir an admin granted it."""
        agg = self.orchestrator(cmd.orchestrator_id)
        reg = cmd.registration
        agg.reregister_by_host(**reg.event_fields(), token_hash=cmd.token_hash, at=cmd.at)
        agg.declare_capacity(reg.max_agents, dict(reg.labels or {}), cmd.at)
        return None, [agg]

    def enroll_orchestrator(self, cmd: c.EnrollOrchestrator) -> tuple[Any, list[Any]]:
        """Grant a host a baseDir and a fresh token; a known one keeps what is not given."""
        agg = self._get(Orchestrator, cmd.orchestrator_id)
        if agg is None:
            agg = Orchestrator.enroll_new(
                orchestrator_id=cmd.orchestrator_id,
                hostname=cmd.hostname or cmd.orchestrator_id,
                base_dir=cmd.base_dir,
                providers=cmd.providers or list(PROVIDERS),
                token_hash=cmd.token_hash,
                at=cmd.at,
            )
            self.live[agg.id] = agg
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

    def rotate_orchestrator_token(
        self, cmd: c.RotateOrchestratorToken
    ) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        agg.rotate_token(cmd.token_hash, cmd.at)
        return None, [agg]

    def revoke_orchestrator_token(
        self, cmd: c.RevokeOrchestratorToken
    ) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        return None, [agg] if agg.revoke_token(cmd.at) else []

    def heartbeat_orchestrator(self, cmd: c.HeartbeatOrchestrator) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        agg.heartbeat(cmd.at, cmd.load)
        return None, [agg]

    def report_managed_agents(self, cmd: c.ReportManagedAgents) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        agg.report_managed_agents(cmd.agents, cmd.at)
        return None, [agg]

    def request_spawn(self, cmd: c.RequestSpawn) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
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
        note = self._control_message(cmd.orchestrator_id, cmd.command_id, control, cmd.at)
        return cmd.command_id, [agg, note]

    def request_action(self, cmd: c.RequestAction) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
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
        note = self._control_message(cmd.orchestrator_id, cmd.command_id, control, cmd.at)
        return cmd.command_id, [agg, note]

    def request_input(self, cmd: c.RequestInput) -> tuple[Any, list[Any]]:
        """Type text into an agent (ADR 0033): a command like restart, with its text in the log."""
        agg = self.orchestrator(cmd.orchestrator_id)
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
        note = self._control_message(cmd.orchestrator_id, cmd.command_id, control, cmd.at)
        return cmd.command_id, [agg, note]

    def report_attention(self, cmd: c.ReportAttention) -> tuple[Any, list[Any]]:
        """The host's word on whether an agent waits for a person (ADR 0032); a repeat records nothing."""
        agg = self.orchestrator(cmd.orchestrator_id)
        changed = agg.report_attention(cmd.agent_id, cmd.attention, cmd.reason, cmd.excerpt, cmd.at)
        return changed, [agg] if changed else []

    def _control_message(
        self, orchestrator_id: str, command_id: str, control: dict[str, Any], at: int
    ) -> Message:
        """The command, also as an urgent system message in ``orchestrator-<id>``'s inbox.

        Returned beside the orchestrator, so the writer saves both in one
        transaction: the command and its message exist together or not at all.
        The message id is the command id (its own aggregate namespace).
        """
        inbox = orchestrator_agent_id(orchestrator_id)
        target = control.get("agentId") or "all agents"
        subject = (
            f"spawn {control['provider']}"
            if control["action"] == "spawn"
            else f"{control['action']} {target}"
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
        self.live[msg.id] = msg
        return msg

    def record_command_result(self, cmd: c.RecordCommandResult) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        agg.record_command_result(cmd.command_id, cmd.status, cmd.error, cmd.agent_id, cmd.at)
        # The command's control message (same id) is settled in the same
        # transaction, so orchestrator inboxes do not fill with done requests.
        note = self._get(Message, cmd.command_id)
        if note is not None and note.settle(cmd.at):
            return cmd.command_id, [agg, note]
        return cmd.command_id, [agg]

    def start_command(self, cmd: c.StartCommand) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        return cmd.command_id, ([agg] if agg.start_command(cmd.command_id, cmd.at) else [])

    def _expire(
        self, agg: Orchestrator, command_ids: list[str], reason: str, at: int
    ) -> tuple[list[str], list[Any]]:
        """End commands and settle their control messages in the same transaction."""
        ended = agg.expire_commands(command_ids, reason, at)
        notes = []
        for cid in ended:
            note = self._get(Message, cid)
            if note is not None and note.settle(at):
                notes.append(note)
        return ended, notes

    def reaper(self, at: int) -> Reaper:
        agg = self._get(Reaper, "")  # type: ignore[arg-type]
        if agg is None:
            agg = Reaper(at=at)
            self.live[agg.id] = agg
        return agg  # type: ignore[no-any-return]

    def suspend_reaping(self, cmd: c.SuspendReaping) -> tuple[Any, list[Any]]:
        agg = self.reaper(cmd.at)
        return None, ([agg] if agg.suspend(cmd.would_reap, cmd.online, cmd.at) else [])

    def resume_reaping(self, cmd: c.ResumeReaping) -> tuple[Any, list[Any]]:
        agg = self.reaper(cmd.at)
        return None, ([agg] if agg.resume(cmd.at) else [])

    def remove_orchestrator(self, cmd: c.RemoveOrchestrator) -> tuple[Any, list[Any]]:
        agg = self.orchestrator(cmd.orchestrator_id)
        agg.remove(cmd.at)
        return None, [agg]

    def register_agent(self, cmd: c.RegisterAgent) -> tuple[Any, list[Any]]:
        agg = self._get(Agent, cmd.agent_id)
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
            self.live[agg.id] = agg
        else:
            agg.reregister(**fields)
        return None, [agg]

    def heartbeat_agent(self, cmd: c.HeartbeatAgent) -> tuple[Any, list[Any]]:
        agg = self.agent(cmd.agent_id)
        agg.heartbeat(cmd.at)
        return None, [agg]

    def remove_agent(self, cmd: c.RemoveAgent) -> tuple[Any, list[Any]]:
        agg = self.agent(cmd.agent_id)
        agg.remove(cmd.at)
        return None, [agg]

    def reap(self, cmd: c.Reap) -> tuple[c.ReapResult, list[Any]]:
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
            agg = self._get(cls, cand.entity_id)
            if agg is not None and agg.version < cand.version:
                # Our live copy is behind what the reaper saw (another relay
                # node wrote it): judge the stored state, not the stale copy.
                self.forget([agg.id])
                agg = self._get(cls, cand.entity_id)
            if agg is None or agg.version != cand.version:
                continue
            if agg.reap(cmd.now, cand.last_seen, cmd.stale_after_ms, cmd.grace_from):
                touched.append(agg)
                (agents if cand.kind == "agent" else orchestrators).append(cand.entity_id)
        released: list[str] = []
        for claim in cmd.expired_claims:
            msg = self._get(Message, claim.message_id)
            if msg is not None and msg.version < claim.version:
                self.forget([msg.id])
                msg = self._get(Message, claim.message_id)
            if msg is None or msg.version != claim.version:
                continue
            if msg.expire(cmd.now, claim.claim_id):
                touched.append(msg)
                released.append(claim.message_id)
        return c.ReapResult(agents, orchestrators, released), touched

    def expire_commands(self, cmd: c.ExpireCommands) -> tuple[c.ReapResult, list[Any]]:
        """End what can no longer happen: commands past their deadline, the pending commands
        of hosts that went offline, and the agents of hosts offline longer than lost-after.

        Its own command, after the reap's: a reap records statuses only
        (invariant 8), and each of these re-checks the live aggregate.
        """
        touched: list[Any] = []
        expired_commands: list[str] = []
        lost: list[str] = []
        for oid in cmd.overdue:
            o = self._get(Orchestrator, oid)
            if o is None or o.removed:
                continue
            ended, notes = self._expire(o, o.overdue_commands(cmd.now), "deadline passed", cmd.now)
            if ended:
                expired_commands.extend(ended)
                touched.extend([o, *notes])
        for oid in cmd.offline:
            o = self._get(Orchestrator, oid)
            if o is None or o.status != "offline":
                continue
            ended, notes = self._expire(o, o.pending_commands(), "orchestrator offline", cmd.now)
            expired_commands.extend(ended)
            touched.extend(notes)
            if o.mark_agents_lost(cmd.now, cmd.lost_after_ms):
                lost.append(oid)
            if ended or oid in lost:
                touched.append(o)
        unique = list({id(a): a for a in touched}.values())  # an aggregate is saved once
        return c.ReapResult([], [], [], expired_commands, lost), unique

    def forget_settled(self, cmd: c.ForgetSettled) -> tuple[c.ForgetResult, list[Any]]:
        """Record that settled commands and messages leave memory (ADR 0036).

        The read model chose them (settled longer than keep-settled ago); each
        aggregate re-checks that what it forgets is settled, so an open command
        or message is never forgotten. The forgotten messages leave ``live``
        at the next eviction, once their event is stored.
        """
        touched: list[Any] = []
        commands: list[str] = []
        messages: list[str] = []
        for oid, cids in cmd.commands:
            o = self._get(Orchestrator, oid)
            if o is None or o.removed:
                continue
            gone = o.forget_settled_commands(list(cids), cmd.now)
            if gone:
                commands.extend(gone)
                touched.append(o)
        for mid in cmd.message_ids:
            msg = self._get(Message, mid)
            if msg is not None and msg.forget(cmd.now):
                messages.append(mid)
                touched.append(msg)
                self._forgotten.add(msg.id)
        return c.ForgetResult(commands, messages), touched

    # -- messages --------------------------------------------------------------------

    def send_message(self, cmd: c.SendMessage) -> tuple[list[str], list[Any]]:
        """A direct message is one Message; a broadcast is its content once (a Broadcast)
        and a small Message per recipient naming it, all in one transaction (ADR 0010, 0014).

        The HTTP edge resolved ``to`` into recipients from the read model; we
        re-check each here. A direct message to a missing agent is refused; a
        broadcast skips recipients removed since, and is refused only when
        none is left, or when its copies together are over the fan-out limit.
        """
        present = [d for d in cmd.deliveries if self.agent_present(d.recipient)]
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
            self.live[msg.id] = msg
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
            self.live[agg.id] = agg
        return [d.message_id for d in present], [broadcast, *copies]

    def claim_message(self, cmd: c.ClaimMessage) -> tuple[Any, list[Any]]:
        msg = self.message(cmd.message_id)
        msg.claim(cmd.agent_id, cmd.claim_id, cmd.lease_ms, cmd.at)
        return cmd.message_id, [msg]

    def ack_message(self, cmd: c.AckMessage) -> tuple[Any, list[Any]]:
        msg = self.message(cmd.message_id)
        msg.ack(cmd.agent_id, cmd.claim_id, cmd.at)
        return cmd.message_id, [msg]

    def release_message(self, cmd: c.ReleaseMessage) -> tuple[Any, list[Any]]:
        msg = self.message(cmd.message_id)
        msg.release(cmd.agent_id, cmd.claim_id, cmd.at)
        return cmd.message_id, [msg]

    def delete_message(self, cmd: c.DeleteMessage) -> tuple[Any, list[Any]]:
        msg = self.message(cmd.message_id)
        msg.delete(cmd.requested_by, cmd.at)
        return cmd.message_id, [msg]


def content_bytes(cmd: c.SendMessage) -> int:
    """What one copy of a message carries: body, subject and meta, as encoded in JSON."""
    return len(orjson.dumps([cmd.body, cmd.subject, cmd.meta]))


_HANDLERS: dict[type, Any] = {
    c.RegisterOrchestrator: RelayApp.register_orchestrator,
    c.ReregisterOwnOrchestrator: RelayApp.reregister_own_orchestrator,
    c.EnrollOrchestrator: RelayApp.enroll_orchestrator,
    c.RotateOrchestratorToken: RelayApp.rotate_orchestrator_token,
    c.RevokeOrchestratorToken: RelayApp.revoke_orchestrator_token,
    c.HeartbeatOrchestrator: RelayApp.heartbeat_orchestrator,
    c.ReportManagedAgents: RelayApp.report_managed_agents,
    c.RequestSpawn: RelayApp.request_spawn,
    c.RequestAction: RelayApp.request_action,
    c.RequestInput: RelayApp.request_input,
    c.ReportAttention: RelayApp.report_attention,
    c.RecordCommandResult: RelayApp.record_command_result,
    c.StartCommand: RelayApp.start_command,
    c.SuspendReaping: RelayApp.suspend_reaping,
    c.ResumeReaping: RelayApp.resume_reaping,
    c.RemoveOrchestrator: RelayApp.remove_orchestrator,
    c.RegisterAgent: RelayApp.register_agent,
    c.HeartbeatAgent: RelayApp.heartbeat_agent,
    c.RemoveAgent: RelayApp.remove_agent,
    c.Reap: RelayApp.reap,
    c.ExpireCommands: RelayApp.expire_commands,
    c.ForgetSettled: RelayApp.forget_settled,
    c.SendMessage: RelayApp.send_message,
    c.ClaimMessage: RelayApp.claim_message,
    c.AckMessage: RelayApp.ack_message,
    c.ReleaseMessage: RelayApp.release_message,
    c.DeleteMessage: RelayApp.delete_message,
}
