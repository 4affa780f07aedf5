"""What every part of the host daemon shares: its config, tmux, state file and client.

The daemon is split by concept (registration, command execution, the agents
in tmux, the watcher); they all act on one ``HostState`` that must be saved
after each change, under one command lock. Keeping that shared part in one
small object, passed to each, lets every module say what it needs without
reaching into the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from relay.host.client import RelayClient
from relay.host.config import HostConfig
from relay.host.crashloop import CrashLoopPolicy
from relay.host.lifecycle import LifecycleConfig
from relay.host.state import HostState, StateFile
from relay.host.tmux import Tmux


def now_ms() -> int:
    """Epoch milliseconds, the relay's unit for times on the wire."""
    return int(time.time() * 1000)


class Backoff:
    """Exponential backoff with jitter, so many hosts don't retry in lockstep."""

    def __init__(self, cap: float, base: float = 0.25) -> None:
        self.cap = cap
        self.base = base
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next try: half to all of ``base * 2**attempt``, capped."""
        delay = min(self.cap, self.base * (2 ** min(self.attempt, 20)))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0


@dataclass
class HostContext:
    """The daemon's shared parts; ``lock`` serialises commands and agent changes."""

    config: HostConfig
    lifecycle: LifecycleConfig
    tmux: Tmux
    state_file: StateFile
    client: RelayClient
    crash: CrashLoopPolicy
    state: HostState = field(default_factory=HostState)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # The managed-agent list changed since the relay last got it.
    agents_dirty: bool = True

    @property
    def notify_dir(self) -> Path:
        """Where ``relay host notify`` drops provider hook reports for this daemon (ADR 0032).

        Beside the state file and named after it, so two daemons sharing a
        state folder never read each other's; agents learn it from
        ``RELAY_NOTIFY_DIR``, never a token.
        """
        path = self.state_file.path
        return path.parent / f"{path.stem}.notify"

    def save(self) -> None:
        """Persist the state (with the client's current token) atomically."""
        self.state.orchestrator_token = self.client.orchestrator_token
        self.state_file.save(self.state)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the daemon is asked to stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
