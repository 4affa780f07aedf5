"""The host's state file: what must survive a ``kill -9`` of the daemon.

It holds the orchestrator token, the last handled log position, the ids of
handled commands, commands that were started but not finished (a write-ahead
mark, so a crash mid-command is never retried blindly), results not yet
accepted by the relay (an outbox), and the managed agents.

Writes are atomic (temp file, fsync, rename, fsync of the folder): after a
crash the file is either the old or the new version, never half of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1
HANDLED_LIMIT = 5000


@dataclass
class ManagedAgent:
    """An agent this host started in tmux, plus what it needs to restart it."""

    agent_id: str
    provider: str
    tmux_session: str
    cwd: str
    approval_mode: str
    started_at: int
    label: str | None = None
    pid: int | None = None
    command_id: str | None = None
    # Crash-loop bookkeeping (relay/host/crashloop.py): restart times in the
    # window, when the next restart is due, how it last ended, and the record
    # of giving up.
    restarts: list[int] = field(default_factory=list)
    restart_due: int | None = None
    last_exit: dict[str, Any] | None = None
    crashloop: dict[str, Any] | None = None
    # ADR 0034: the agent's git worktree (its top folder), its branch, and the
    # repository it belongs to (where ``git worktree remove`` runs; host only).
    worktree: str | None = None
    branch: str | None = None
    worktree_repo: str | None = None
    # The provider session: the one it was resumed with, or one the provider reported.
    session_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The managed-agent shape of the HTTP contract (camelCase, no nulls)."""
        wire: dict[str, Any] = {
            "agentId": self.agent_id,
            "provider": self.provider,
            "tmuxSession": self.tmux_session,
            "cwd": self.cwd,
            "approvalMode": self.approval_mode,
            "startedAt": self.started_at,
        }
        if self.label is not None:
            wire["label"] = self.label
        if self.pid is not None:
            wire["pid"] = self.pid
        if self.restarts:
            wire["restarts"] = len(self.restarts)
        if self.last_exit is not None:
            wire["lastExit"] = self.last_exit
        if self.crashloop is not None:
            wire["crashloop"] = self.crashloop
        if self.worktree is not None:
            wire["worktree"] = self.worktree
        if self.branch is not None:
            wire["branch"] = self.branch
        if self.session_id is not None:
            wire["sessionId"] = self.session_id
        return wire

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManagedAgent:
        """The border between the state file's dicts and this type."""
        return cls(
            agent_id=str(data["agent_id"]),
            provider=str(data["provider"]),
            tmux_session=str(data["tmux_session"]),
            cwd=str(data["cwd"]),
            approval_mode=str(data.get("approval_mode") or "guarded"),
            started_at=int(data.get("started_at") or 0),
            label=data.get("label"),
            pid=data.get("pid"),
            command_id=data.get("command_id"),
            restarts=[int(t) for t in data.get("restarts") or []],
            restart_due=data.get("restart_due"),
            last_exit=data.get("last_exit"),
            crashloop=data.get("crashloop"),
            worktree=data.get("worktree"),
            branch=data.get("branch"),
            worktree_repo=data.get("worktree_repo"),
            session_id=data.get("session_id"),
        )


@dataclass
class HostState:
    """Everything the daemon persists, in memory."""

    orchestrator_id: str = ""
    relay_url: str = ""
    orchestrator_token: str | None = None
    last_event_id: str | None = None
    handled: list[str] = field(default_factory=list)
    started: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: list[ManagedAgent] = field(default_factory=list)

    def is_handled(self, command_id: str) -> bool:
        """True once a command was carried out (or given up on) by this host."""
        return command_id in self.handled or command_id in self.started

    def mark_started(self, command: dict[str, Any]) -> None:
        """Record, before acting, that a command is being carried out."""
        self.started[str(command["id"])] = command

    def finish(self, command_id: str, result: dict[str, Any]) -> None:
        """Move a command from started to handled and queue its result."""
        self.started.pop(command_id, None)
        if command_id not in self.handled:
            self.handled.append(command_id)
            # Bounded: ids older than this are long settled on the relay, and
            # only pending commands are ever acted on.
            del self.handled[:-HANDLED_LIMIT]
        self.outbox[command_id] = result

    def skip(self, command_id: str) -> None:
        """Mark a command handled without running it and without a result (it expires)."""
        if command_id not in self.handled:
            self.handled.append(command_id)
            del self.handled[:-HANDLED_LIMIT]

    def agent(self, agent_id: str) -> ManagedAgent | None:
        """The managed agent with this id, if this host runs it."""
        return next((a for a in self.agents if a.agent_id == agent_id), None)

    def to_json(self) -> dict[str, Any]:
        """The file's JSON document."""
        return {
            "version": STATE_VERSION,
            "orchestratorId": self.orchestrator_id,
            "relayUrl": self.relay_url,
            "orchestratorToken": self.orchestrator_token,
            "lastEventId": self.last_event_id,
            "handledCommandIds": list(self.handled),
            "startedCommands": self.started,
            "outbox": self.outbox,
            "agents": [asdict(a) for a in self.agents],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        """Read a document written by ``to_json``."""
        return cls(
            orchestrator_id=str(data.get("orchestratorId") or ""),
            relay_url=str(data.get("relayUrl") or ""),
            orchestrator_token=data.get("orchestratorToken"),
            last_event_id=data.get("lastEventId"),
            handled=[str(c) for c in data.get("handledCommandIds") or []],
            started=dict(data.get("startedCommands") or {}),
            outbox=dict(data.get("outbox") or {}),
            agents=[ManagedAgent.from_json(a) for a in data.get("agents") or []],
        )


class StateFileError(RuntimeError):
    """Raised when the state file exists but cannot be read as ours."""


class StateFile:
    """Loads and atomically saves one ``HostState``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> HostState:
        """The saved state, or a fresh one when there is no file yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return HostState()
        except OSError as exc:
            raise StateFileError(f"cannot read state file {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return HostState.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFileError(
                f"state file {self.path} is damaged ({exc}); move it aside to start afresh"
            ) from exc

    def save(self, state: HostState) -> None:
        """Write the state atomically and durably; the file is private (0600)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(state.to_json(), indent=2, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
