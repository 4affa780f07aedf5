"""The orchestrator aggregate: one per host, and the commands sent to it.

Commands live inside the orchestrator (ADR 0003): every rule about a command
(online, offered provider, confined cwd, one result) is a rule about the
orchestrator's current state, so one aggregate decides it without a second
load or a cross-aggregate transaction.

Public methods decide (and run once); the ``@event`` methods only record, and
re-run on every replay, so they are plain assignments. Each event is a class
declared just above the method that records it, with its stored name as
``TOPIC`` and its ``class_version`` (ADR 0002): a change to its fields bumps
the version and adds an upcaster there.

Tokens (ADR 0013): an admin grants a host its orchestrator token and the
``baseDir`` it may use (by registering it, or by enrolling it); the host may
re-register *itself* with that token but only inside that grant. Every token
fact holds a SHA-256, never a token.
"""

from __future__ import annotations

import hmac
import posixpath
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from relay.domain.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from relay.domain.rules import (
    ATTENTIONS,
    MAX_ATTENTION_EXCERPT,
    MAX_ATTENTION_REASON,
    MAX_PROMPT_CHARS,
    check_attention_text,
    check_input_text,
    check_managed_agents,
    confine_cwd,
    is_silent,
)

ONLINE = "online"
OFFLINE = "offline"
REMOVED = "removed"
PENDING = "pending"
RUNNING = "running"
EXPIRED = "expired"
OPEN_COMMAND_STATES = (PENDING, RUNNING)


def path_inside(base: str, path: str) -> bool:
    """Whether ``path`` is ``base`` or below it, by normalised components.

    Never a string prefix: ``/srv/a2`` is not inside ``/srv/a``, and
    ``/srv/a/../b`` is not either. Symlinks live on the host; the host
    resolves them (docs/host.md), the relay judges the words.
    """

    def parts(p: str) -> list[str]:
        return [x for x in posixpath.normpath(p).split("/") if x]

    if not posixpath.isabs(base) or not posixpath.isabs(path):
        return False
    b = parts(base)
    return parts(path)[: len(b)] == b


class Orchestrator(Aggregate):
    """A host's orchestrator: registration, liveness, managed agents and commands."""

    TOPIC = "Orchestrator"
    # 2: capacity, load, command deadlines and lost agents (issue 15). Snapshots
    # taken before carry version 1 and are upcast on load; events need no
    # upcaster because every field they gained has a default.
    # 3: agents' attention and open input commands (issue 16).
    class_version = 3

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        offline = state.get("status") == OFFLINE
        state.update(
            max_agents=None,
            labels={},
            load=None,
            deadlines={},
            pending_spawns={},
            offline_since=state.get("last_seen") if offline else None,
            agents_lost=False,
        )

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state.update(attention={}, input_commands={})

    class Event(Aggregate.Event):
        TOPIC = "OrchestratorEvent"

    class Enrolled(Aggregate.Created, Event):
        """An admin enrolled a host that never registered: known, offline, holding a token."""

        TOPIC = "OrchestratorEnrolled"
        class_version = 1
        orchestrator_id: str
        hostname: str
        base_dir: str
        providers: list[str]
        env_keys: list[str]
        meta: dict[str, Any]
        token_hash: str
        at: int

        def apply(self, aggregate: Any) -> None:
            # __init__ ran with these fields (the library's creation path); the
            # host has not shown up yet, so it is not online.
            aggregate.status = OFFLINE

    @staticmethod
    def create_id(orchestrator_id: str, **_: Any) -> UUID:
        """Derived from the natural id, so no lookup index is needed."""
        return uuid5(NAMESPACE_URL, "relay:orchestrator:" + orchestrator_id)

    class Registered(Aggregate.Created, Event):
        """An admin registered the host (or the host did, before tokens): online, holding a token."""

        TOPIC = "OrchestratorRegistered"
        class_version = 1
        orchestrator_id: str
        hostname: str
        base_dir: str
        providers: list[str]
        env_keys: list[str]
        meta: dict[str, Any]
        token_hash: str
        at: int

    @event(Registered)
    def __init__(
        self,
        orchestrator_id: str,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        token_hash: str,
        at: int,
    ) -> None:
        self.orchestrator_id = orchestrator_id
        self._start_afresh(hostname, base_dir, providers, env_keys, meta, token_hash, at)

    def _start_afresh(
        self,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        token_hash: str,
        at: int,
    ) -> None:
        self.hostname = hostname
        self.base_dir = base_dir
        self.granted_base_dir = base_dir
        self.providers = providers
        self.env_keys = env_keys
        self.meta = meta
        self.token_hash = token_hash
        self.status = ONLINE
        self.last_seen = at
        self.created_at = at
        self.managed_agents: list[dict[str, Any]] = []
        self.commands: dict[str, str] = {}
        self._init_lifecycle()
        self._init_attention()

    def _init_lifecycle(self) -> None:
        """State added with issue 15; set on (re)start so that old logs replay unchanged."""
        self.max_agents: int | None = None
        self.labels: dict[str, str] = {}
        self.load: dict[str, Any] | None = None
        self.deadlines: dict[str, int | None] = {}  # open command id -> deadlineAt
        self.pending_spawns: dict[str, bool] = {}  # a dict, not a set: snapshots are JSON
        self.offline_since: int | None = None
        self.agents_lost = False

    def _init_attention(self) -> None:
        """State added with issue 16 (ADR 0032, 0033)."""
        # agent id -> {"attention": "input"|"idle", "reason": str, "since": at}
        self.attention: dict[str, dict[str, Any]] = {}
        self.input_commands: dict[str, str] = {}  # open input command id -> agent id

    @classmethod
    def enroll_new(
        cls,
        orchestrator_id: str,
        hostname: str,
        base_dir: str,
        providers: list[str],
        token_hash: str,
        at: int,
    ) -> Orchestrator:
        """A host the admin enrolled before it ever registered."""
        return cls._create(
            cls.Enrolled,
            id=cls.create_id(orchestrator_id),
            orchestrator_id=orchestrator_id,
            hostname=hostname,
            base_dir=base_dir,
            providers=providers,
            env_keys=[],
            meta={},
            token_hash=token_hash,
            at=at,
        )

    @property
    def removed(self) -> bool:
        return self.status == REMOVED

    @property
    def grant(self) -> str:
        """The baseDir an admin granted; a host token may narrow its baseDir, never widen it.

        Snapshots taken before grants existed lack the attribute: their last
        admin registration set both, so the base dir is the grant.
        """
        return self.__dict__.get("granted_base_dir") or self.base_dir

    def _require_present(self) -> None:
        if self.status == REMOVED:
            raise NotFoundError(f"orchestrator {self.orchestrator_id!r} was removed")

    def _require_online(self) -> None:
        self._require_present()
        if self.status != ONLINE:
            raise ConflictError(
                f"orchestrator {self.orchestrator_id!r} is offline; "
                "it must heartbeat or register again first"
            )

    def _require_available(self, at: int, stale_after_ms: int | None, grace_from: int) -> None:
        """Online, and heard from within stale-after at ``at``.

        The reaper marks a silent host offline only on its next run (up to
        --reap-every later); a command must not be queued for a host that is
        already offline by the rule, only not yet by the record.
        """
        self._require_online()
        if stale_after_ms is not None and is_silent(self.last_seen, at, stale_after_ms, grace_from):
            silent_s = (at - max(self.last_seen, grace_from)) / 1000
            raise ConflictError(
                f"orchestrator {self.orchestrator_id!r} is offline: silent for {silent_s:g} s, "
                f"longer than stale-after ({stale_after_ms / 1000:g} s); "
                "it must heartbeat or register again first"
            )

    def reregister(
        self,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        token_hash: str,
        at: int,
    ) -> None:
        """Registering again updates it and brings it online; after removal, afresh."""
        self._reregistered(
            hostname=hostname,
            base_dir=base_dir,
            providers=providers,
            env_keys=env_keys,
            meta=meta,
            token_hash=token_hash,
            at=at,
        )

    class Reregistered(Event):
        """Registered again by an admin: a new grant and token, online (afresh after removal)."""

        TOPIC = "OrchestratorReregistered"
        class_version = 1
        hostname: str
        base_dir: str
        providers: list[str]
        env_keys: list[str]
        meta: dict[str, Any]
        token_hash: str
        at: int

    @event(Reregistered)
    def _reregistered(
        self,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        token_hash: str,
        at: int,
    ) -> None:
        if self.status == REMOVED:
            self._start_afresh(hostname, base_dir, providers, env_keys, meta, token_hash, at)
            return
        self.hostname = hostname
        self.base_dir = base_dir
        self.granted_base_dir = base_dir
        self.providers = providers
        self.env_keys = env_keys
        self.meta = meta
        self.token_hash = token_hash
        self.status = ONLINE
        self.last_seen = max(self.last_seen, at)
        self._back_online()

    def reenroll(
        self, hostname: str, base_dir: str, providers: list[str], token_hash: str, at: int
    ) -> None:
        """Enroll again: a new grant and a new token (the old one stops); after removal, afresh."""
        self._reenrolled(
            hostname=hostname, base_dir=base_dir, providers=providers, token_hash=token_hash, at=at
        )

    class Reenrolled(Event):
        """Enrolled again: a new grant and token; its online state is left as it was."""

        TOPIC = "OrchestratorReenrolled"
        class_version = 1
        hostname: str
        base_dir: str
        providers: list[str]
        token_hash: str
        at: int

    @event(Reenrolled)
    def _reenrolled(
        self, hostname: str, base_dir: str, providers: list[str], token_hash: str, at: int
    ) -> None:
        if self.status == REMOVED:
            self._start_afresh(hostname, base_dir, providers, [], {}, token_hash, at)
            self.status = OFFLINE
            return
        self.hostname = hostname
        self.base_dir = base_dir
        self.granted_base_dir = base_dir
        self.providers = providers
        self.token_hash = token_hash

    def reregister_by_host(
        self,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        token_hash: str,
        at: int,
    ) -> None:
        """The host, with its own token, says what it offers now; only inside its grant.

        ``token_hash`` is the presented token's: checked here too, so a token
        rotated or revoked after the edge let the request in cannot slip by.
        """
        self._require_present()
        if not self.token_hash or not hmac.compare_digest(self.token_hash, token_hash):
            raise ForbiddenError(
                f"the token of orchestrator {self.orchestrator_id!r} was rotated or revoked; "
                "ask an admin for the current one"
            )
        if not path_inside(self.grant, base_dir):
            raise ForbiddenError(
                f"baseDir: {base_dir!r} is not inside {self.grant!r}, the baseDir an admin "
                f"granted orchestrator {self.orchestrator_id!r}; a host token may narrow it, "
                "never widen it (an admin can enroll the host again with another baseDir)"
            )
        self._reregistered_by_host(
            hostname=hostname,
            base_dir=base_dir,
            providers=providers,
            env_keys=env_keys,
            meta=meta,
            at=at,
        )

    class ReregisteredByHost(Event):
        """The host re-registered itself with its own token, inside its grant; token unchanged."""

        TOPIC = "OrchestratorReregisteredByHost"
        class_version = 1
        hostname: str
        base_dir: str
        providers: list[str]
        env_keys: list[str]
        meta: dict[str, Any]
        at: int

    @event(ReregisteredByHost)
    def _reregistered_by_host(
        self,
        hostname: str,
        base_dir: str,
        providers: list[str],
        env_keys: list[str],
        meta: dict[str, Any],
        at: int,
    ) -> None:
        self.hostname = hostname
        self.base_dir = base_dir
        self.providers = providers
        self.env_keys = env_keys
        self.meta = meta
        self.status = ONLINE
        self.last_seen = max(self.last_seen, at)

    def rotate_token(self, token_hash: str, at: int) -> None:
        """A new token for the host; the previous one stops working with this event."""
        self._require_present()
        self._token_rotated(token_hash=token_hash, at=at)

    class TokenRotated(Event):
        """The host's token was replaced; the previous one stops working here."""

        TOPIC = "OrchestratorTokenRotated"
        class_version = 1
        token_hash: str
        at: int

    @event(TokenRotated)
    def _token_rotated(self, token_hash: str, at: int) -> None:
        self.token_hash = token_hash

    def revoke_token(self, at: int) -> bool:
        """No token works for it until an admin rotates, enrolls or registers it again.

        False (nothing recorded) when it holds no token already.
        """
        self._require_present()
        if not self.token_hash:
            return False
        self._token_revoked(at=at)
        return True

    class TokenRevoked(Event):
        """No token works for the host until an admin grants a new one."""

        TOPIC = "OrchestratorTokenRevoked"
        class_version = 1
        at: int

    @event(TokenRevoked)
    def _token_revoked(self, at: int) -> None:
        self.token_hash = ""

    def heartbeat(self, at: int, load: dict[str, Any] | None = None) -> None:
        """Proof of life, judged on the server's receive time ``at``; may carry the host's load."""
        self._require_present()
        self._heartbeat_received(at=at, load=load)

    class HeartbeatReceived(Event):
        """The host was heard from at ``at`` (the relay's receive time), maybe with its load.

        Version 1 has always had ``load`` optional: logs written before issue
        15 lack the key, later ones hold it (``null`` when not sent). The
        declared default reads both; no version bump was needed, so none adds
        ``class_version`` to the most frequent event in the log.
        """

        TOPIC = "OrchestratorHeartbeatReceived"
        class_version = 1
        at: int
        load: dict[str, Any] | None = None

    @event(HeartbeatReceived)
    def _heartbeat_received(self, at: int, load: dict[str, Any] | None = None) -> None:
        self.status = ONLINE
        self.last_seen = max(self.last_seen, at)
        self.load = load
        self._back_online()

    def _back_online(self) -> None:
        self.offline_since = None
        self.agents_lost = False

    # -- capacity (issue 15) --------------------------------------------------------

    def declare_capacity(self, max_agents: int | None, labels: dict[str, str], at: int) -> bool:
        """Record the host's capacity and labels when they differ from what the log says."""
        self._require_present()
        if max_agents == self.max_agents and labels == self.labels:
            return False
        self._capacity_declared(max_agents=max_agents, labels=labels, at=at)
        return True

    class CapacityDeclared(Event):
        """The host's capacity (``max_agents``, None: no limit) and labels changed."""

        TOPIC = "OrchestratorCapacityDeclared"
        class_version = 1
        max_agents: int | None
        labels: dict[str, str]
        at: int

    @event(CapacityDeclared)
    def _capacity_declared(self, max_agents: int | None, labels: dict[str, str], at: int) -> None:
        self.max_agents = max_agents
        self.labels = labels

    @property
    def active_agents(self) -> int:
        """Agents the host runs: its reported load when given, else its reported agents."""
        if self.load is not None and isinstance(self.load.get("activeAgents"), int):
            return int(self.load["activeAgents"])
        return len(self.managed_agents)

    def _require_room(self) -> None:
        if self.max_agents is None:
            return
        busy = self.active_agents + len(self.pending_spawns)
        if busy >= self.max_agents:
            raise ConflictError(
                f"orchestrator {self.orchestrator_id!r} is full "
                f"({busy} of {self.max_agents} agents, pending spawns included)"
            )

    def report_managed_agents(self, agents: list[dict[str, Any]], at: int) -> None:
        """The host's list replaces the previous one; every agent works inside baseDir."""
        self._require_present()
        check_managed_agents(self.base_dir, agents)
        self._managed_agents_reported(agents=agents, at=at)

    class ManagedAgentsReported(Event):
        """The host's list of the agents it runs, replacing the previous one."""

        TOPIC = "ManagedAgentsReported"
        class_version = 1
        agents: list[dict[str, Any]]
        at: int

    @event(ManagedAgentsReported)
    def _managed_agents_reported(self, agents: list[dict[str, Any]], at: int) -> None:
        self.managed_agents = agents
        # An agent no longer reported waits for nobody (the read models apply the same rule).
        listed = {a.get("agentId") for a in agents}
        self.attention = {k: v for k, v in self.attention.items() if k in listed}

    def request_spawn(
        self,
        command_id: str,
        provider: str,
        cwd: str | None,
        label: str | None,
        approval_mode: str,
        prompt: str | None,
        requested_by: str,
        at: int,
        stale_after_ms: int | None = None,
        grace_from: int = 0,
        deadline_at: int | None = None,
        worktree: dict[str, Any] | None = None,
        resume: str | None = None,
    ) -> None:
        """Ask the host to start an agent; refused unless the host could do it now.

        ``stale_after_ms`` (with ``grace_from``, the relay's start) judges
        liveness at ``at``; None judges by the recorded status alone.
        ``worktree`` and ``resume`` (ADR 0034) are checked at the edge and
        carried out by the host.
        """
        self._require_available(at, stale_after_ms, grace_from)
        if provider not in self.providers:
            raise InvalidInputError(
                "provider",
                f"orchestrator {self.orchestrator_id!r} offers only "
                f"{', '.join(self.providers)}, not {provider!r}",
            )
        resolved = confine_cwd(self.base_dir, cwd)
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidInputError("prompt", f"must be at most {MAX_PROMPT_CHARS} characters")
        if command_id in self.commands:
            raise ConflictError(f"command {command_id!r} already exists")
        self._require_room()
        self._spawn_requested(
            command_id=command_id,
            provider=provider,
            cwd=resolved,
            label=label,
            approval_mode=approval_mode,
            prompt=prompt,
            requested_by=requested_by,
            at=at,
            deadline_at=deadline_at,
            worktree=worktree,
            resume=resume,
        )

    class SpawnRequested(Event):
        """Someone asked the host to start an agent; the command is pending.

        Version 2 (the upcasting example, ADR 0002): ``deadline_at`` (epoch
        ms, None: none) came with issue 15. Logs recorded before it
        (tests/fixtures/log-v1) hold version-1 events without the key; the
        upcaster gives them the default, so every reader sees the field.

        ``worktree`` ({"branch": name or None}: run the agent in a new git
        worktree) and ``resume`` (a provider session id) came with issue 16
        (ADR 0034): optional, absent from every older event, so declared with
        defaults instead of a version bump (ADR 0002, amended).
        """

        TOPIC = "SpawnRequested"
        class_version = 2
        command_id: str
        provider: str
        cwd: str
        label: str | None
        approval_mode: str
        prompt: str | None
        requested_by: str
        at: int
        deadline_at: int | None
        worktree: dict[str, Any] | None = None
        resume: str | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("deadline_at", None)

    @event(SpawnRequested)
    def _spawn_requested(
        self,
        command_id: str,
        provider: str,
        cwd: str,
        label: str | None,
        approval_mode: str,
        prompt: str | None,
        requested_by: str,
        at: int,
        deadline_at: int | None,
        worktree: dict[str, Any] | None = None,
        resume: str | None = None,
    ) -> None:
        self.commands[command_id] = PENDING
        self.deadlines[command_id] = deadline_at
        self.pending_spawns[command_id] = True

    def request_action(
        self,
        command_id: str,
        action: str,
        agent_id: str | None,
        requested_by: str,
        at: int,
        stale_after_ms: int | None = None,
        grace_from: int = 0,
        deadline_at: int | None = None,
        remove_worktree: bool = False,
    ) -> None:
        """Restart or shut down one managed agent, or all of them when no agent is named.

        ``remove_worktree`` (a shutdown only) is checked at the edge.
        """
        self._require_available(at, stale_after_ms, grace_from)
        if agent_id is not None and not any(
            a.get("agentId") == agent_id for a in self.managed_agents
        ):
            raise NotFoundError(
                f"orchestrator {self.orchestrator_id!r} has no managed agent {agent_id!r}"
            )
        if command_id in self.commands:
            raise ConflictError(f"command {command_id!r} already exists")
        self._action_requested(
            command_id=command_id,
            action=action,
            agent_id=agent_id,
            requested_by=requested_by,
            at=at,
            deadline_at=deadline_at,
            remove_worktree=remove_worktree,
        )

    class ActionRequested(Event):
        """Someone asked the host to restart or shut down one agent (or all: ``agent_id`` None).

        Version 2: ``deadline_at`` added, as on ``SpawnRequested``.
        ``remove_worktree`` (a shutdown that also removes the agent's worktree
        if clean, ADR 0034) came later, optional with a default.
        """

        TOPIC = "ActionRequested"
        class_version = 2
        command_id: str
        action: str
        agent_id: str | None
        requested_by: str
        at: int
        deadline_at: int | None
        remove_worktree: bool = False

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("deadline_at", None)

    @event(ActionRequested)
    def _action_requested(
        self,
        command_id: str,
        action: str,
        agent_id: str | None,
        requested_by: str,
        at: int,
        deadline_at: int | None,
        remove_worktree: bool = False,
    ) -> None:
        self.commands[command_id] = PENDING
        self.deadlines[command_id] = deadline_at

    # -- needs-input and answers (issue 16, ADR 0032, 0033) --------------------------

    def _require_managed(self, agent_id: str) -> None:
        if not any(a.get("agentId") == agent_id for a in self.managed_agents):
            raise NotFoundError(
                f"orchestrator {self.orchestrator_id!r} has no managed agent {agent_id!r}"
            )

    def request_input(
        self,
        command_id: str,
        agent_id: str,
        text: str,
        enter: bool,
        requested_by: str,
        at: int,
        stale_after_ms: int | None = None,
        grace_from: int = 0,
        deadline_at: int | None = None,
    ) -> None:
        """Type ``text`` into one managed agent's terminal (then Enter unless ``enter`` is False).

        The text is kept in the log: who told which agent what is the audit trail.
        """
        self._require_available(at, stale_after_ms, grace_from)
        self._require_managed(agent_id)
        check_input_text(text, enter)
        if command_id in self.commands:
            raise ConflictError(f"command {command_id!r} already exists")
        self._input_requested(
            command_id=command_id,
            agent_id=agent_id,
            text=text,
            enter=enter,
            requested_by=requested_by,
            at=at,
            deadline_at=deadline_at,
        )

    class InputRequested(Event):
        """Someone asked the host to type ``text`` into one agent (then Enter unless
        ``enter`` is False): the audit trail of who told which agent what (ADR 0033)."""

        TOPIC = "InputRequested"
        class_version = 1
        command_id: str
        agent_id: str
        text: str
        enter: bool
        requested_by: str
        at: int
        deadline_at: int | None

    @event(InputRequested)
    def _input_requested(
        self,
        command_id: str,
        agent_id: str,
        text: str,
        enter: bool,
        requested_by: str,
        at: int,
        deadline_at: int | None,
    ) -> None:
        self.commands[command_id] = PENDING
        self.deadlines[command_id] = deadline_at
        self.input_commands[command_id] = agent_id

    def report_attention(
        self, agent_id: str, attention: str | None, reason: str, excerpt: str, at: int
    ) -> bool:
        """The host says a managed agent waits for a person (``input``), sits ``idle``,
        or (None) moved on. False, and nothing recorded, when that is already so:
        hosts repeat themselves (retries, restarts), and a repeat is not news.
        """
        self._require_present()
        if attention is not None and attention not in ATTENTIONS:
            raise InvalidInputError("attention", f"must be one of {', '.join(ATTENTIONS)} or null")
        self._require_managed(agent_id)
        check_attention_text("reason", reason, MAX_ATTENTION_REASON)
        check_attention_text("excerpt", excerpt, MAX_ATTENTION_EXCERPT)
        current = self.attention.get(agent_id)
        if attention is None:
            if current is None:
                return False
            self._agent_input_resumed(agent_id=agent_id, reason=reason, at=at, command_id=None)
            return True
        if current is not None and (current["attention"], current["reason"]) == (attention, reason):
            return False
        self._agent_awaiting_input(
            agent_id=agent_id, attention=attention, reason=reason, excerpt=excerpt, at=at
        )
        return True

    class AgentAwaitingInput(Event):
        """The host saw one of its agents wait for a person: ``attention`` ``input`` (it asks)
        or ``idle`` (quiet, asking nothing it knows), why, and its last lines (ADR 0032)."""

        TOPIC = "AgentAwaitingInput"
        class_version = 1
        agent_id: str
        attention: str
        reason: str
        excerpt: str
        at: int

    @event(AgentAwaitingInput)
    def _agent_awaiting_input(
        self, agent_id: str, attention: str, reason: str, excerpt: str, at: int
    ) -> None:
        self.attention[agent_id] = {"attention": attention, "reason": reason, "since": at}

    class AgentInputResumed(Event):
        """An agent waits for nobody any more: its output moved on, a hook said so, or
        (``command_id``) an input command typed into it is done (ADR 0032, 0033)."""

        TOPIC = "AgentInputResumed"
        class_version = 1
        agent_id: str
        reason: str
        at: int
        command_id: str | None

    @event(AgentInputResumed)
    def _agent_input_resumed(
        self, agent_id: str, reason: str, at: int, command_id: str | None = None
    ) -> None:
        self.attention.pop(agent_id, None)

    def start_command(self, command_id: str, at: int) -> bool:
        """The host says it started the command; refused once it is over or past its deadline.

        Returns False (and records nothing) when it is already running: hosts
        retry, and a retry is not news.
        """
        self._require_present()
        current = self._command_status(command_id)
        if current == RUNNING:
            return False
        if current != PENDING:
            raise ConflictError(f"command {command_id!r} is already over ({current})")
        deadline = self.deadlines.get(command_id)
        if deadline is not None and at > deadline:
            raise ConflictError(
                f"command {command_id!r} passed its deadline ({deadline}); it must not start"
            )
        self._command_started(command_id=command_id, at=at)
        return True

    class CommandStarted(Event):
        """The host started a pending command."""

        TOPIC = "CommandStarted"
        class_version = 1
        command_id: str
        at: int

    @event(CommandStarted)
    def _command_started(self, command_id: str, at: int) -> None:
        self.commands[command_id] = RUNNING

    def _command_status(self, command_id: str) -> str:
        current = self.commands.get(command_id)
        if current is None:
            raise NotFoundError(
                f"orchestrator {self.orchestrator_id!r} has no command {command_id!r} "
                "(never sent, or settled and forgotten after --keep-settled; "
                "the log keeps its history)"
            )
        return current

    def overdue_commands(self, now: int) -> list[str]:
        """Open commands whose deadline has passed at ``now`` (what the reaper expires)."""
        return [
            cid
            for cid, deadline in self.deadlines.items()
            if deadline is not None and now > deadline and self.commands.get(cid) in OPEN_COMMAND_STATES
        ]

    def expire_commands(self, command_ids: list[str], reason: str, at: int) -> list[str]:
        """End open commands that can no longer run; returns the ones it ended."""
        ended = []
        for cid in command_ids:
            if self.commands.get(cid) in OPEN_COMMAND_STATES:
                self._command_expired(command_id=cid, reason=reason, at=at)
                ended.append(cid)
        return ended

    class CommandExpired(Event):
        """An open command ended without a result (its deadline passed, its host went offline)."""

        TOPIC = "CommandExpired"
        class_version = 1
        command_id: str
        reason: str
        at: int

    @event(CommandExpired)
    def _command_expired(self, command_id: str, reason: str, at: int) -> None:
        self.commands[command_id] = EXPIRED
        self.deadlines.pop(command_id, None)
        self.pending_spawns.pop(command_id, None)
        self.input_commands.pop(command_id, None)

    def record_command_result(
        self, command_id: str, status: str, error: str | None, agent_id: str | None, at: int
    ) -> None:
        """Exactly one result per command: a second one is a conflict, not an overwrite."""
        self._require_present()
        current = self._command_status(command_id)
        if current == EXPIRED:
            raise ConflictError(f"command {command_id!r} expired; its result is not recorded")
        if current not in OPEN_COMMAND_STATES:
            raise ConflictError(f"command {command_id!r} already has a result ({current})")
        answered = self.input_commands.get(command_id)
        self._command_result_recorded(
            command_id=command_id, status=status, error=error, agent_id=agent_id, at=at
        )
        # Input typed into an agent answers whatever it was waiting for (ADR 0033).
        if status == "done" and answered is not None and answered in self.attention:
            self._agent_input_resumed(
                agent_id=answered, reason="input sent", at=at, command_id=command_id
            )

    class CommandResultRecorded(Event):
        """The host posted a command's one result (``done`` or ``failed``)."""

        TOPIC = "CommandResultRecorded"
        class_version = 1
        command_id: str
        status: str
        error: str | None
        agent_id: str | None
        at: int

    @event(CommandResultRecorded)
    def _command_result_recorded(
        self, command_id: str, status: str, error: str | None, agent_id: str | None, at: int
    ) -> None:
        self.commands[command_id] = status
        self.deadlines.pop(command_id, None)
        self.pending_spawns.pop(command_id, None)
        self.input_commands.pop(command_id, None)

    def forget_settled_commands(self, command_ids: list[str], at: int) -> list[str]:
        """Let settled commands leave memory (ADR 0036); returns the ones forgotten.

        Only commands that are over (done, failed, expired) are forgotten; an
        open one, or one unknown here, is skipped, never dropped. How long a
        command stays after it settled (``--keep-settled``) is the caller's
        judgement, made from the read model with time passed in; the log keeps
        every event of a forgotten command, so its history is whole.
        """
        gone = [
            cid
            for cid in dict.fromkeys(command_ids)
            if cid in self.commands and self.commands[cid] not in OPEN_COMMAND_STATES
        ]
        if gone:
            self._settled_commands_forgotten(command_ids=gone, at=at)
        return gone

    class SettledCommandsForgotten(Event):
        """Commands over for longer than keep-settled left memory; the log keeps their history."""

        TOPIC = "SettledCommandsForgotten"
        class_version = 1
        command_ids: list[str]
        at: int

    @event(SettledCommandsForgotten)
    def _settled_commands_forgotten(self, command_ids: list[str], at: int) -> None:
        for cid in command_ids:
            self.commands.pop(cid, None)

    def remove(self, at: int) -> None:
        """Forget the orchestrator; its managed agents keep running on the host."""
        self._require_present()
        self._removed(at=at)

    class Removed(Event):
        """The orchestrator was forgotten; its agents keep running on the host."""

        TOPIC = "OrchestratorRemoved"
        class_version = 1
        at: int

    @event(Removed)
    def _removed(self, at: int) -> None:
        self.status = REMOVED
        self.managed_agents = []
        self.attention = {}

    def is_stale(self, now: int, stale_after_ms: int, grace_from: int) -> bool:
        """Online and silent for longer than stale-after (never counting relay downtime)."""
        return self.status == ONLINE and is_silent(self.last_seen, now, stale_after_ms, grace_from)

    def reap(self, now: int, judged_last_seen: int, stale_after_ms: int, grace_from: int) -> bool:
        """Mark offline if still stale *and* unchanged since the reaper judged it.

        A heartbeat that committed after the reaper's decision moved
        ``last_seen``: then nothing is recorded and the heartbeat wins.
        """
        if self.last_seen != judged_last_seen:
            return False
        if not self.is_stale(now, stale_after_ms, grace_from):
            return False
        self._reaped(at=now, last_seen=judged_last_seen)
        return True

    class Reaped(Event):
        """The reaper marked the host offline: silent since ``last_seen``, judged at ``at``."""

        TOPIC = "OrchestratorReaped"
        class_version = 1
        at: int
        last_seen: int

    @event(Reaped)
    def _reaped(self, at: int, last_seen: int) -> None:
        self.status = OFFLINE
        self.offline_since = at

    def pending_commands(self) -> list[str]:
        """Commands the host has not started (a reaped host's are expired at once)."""
        return [cid for cid, st in self.commands.items() if st == PENDING]

    def mark_agents_lost(self, now: int, lost_after_ms: int) -> bool:
        """Offline for longer than ``lost_after_ms``: its managed agents are lost, not unknown."""
        if (
            self.status != OFFLINE
            or self.agents_lost
            or self.offline_since is None
            or now - self.offline_since <= lost_after_ms
            or not self.managed_agents
        ):
            return False
        self._managed_agents_lost(at=now)
        return True

    class ManagedAgentsLost(Event):
        """The host stayed offline past lost-after: its agents are lost, not unknown."""

        TOPIC = "ManagedAgentsLost"
        class_version = 1
        at: int

    @event(ManagedAgentsLost)
    def _managed_agents_lost(self, at: int) -> None:
        self.agents_lost = True
