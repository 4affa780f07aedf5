"""Crash loops end: restart an agent that fails, with backoff, then give up and say so.

An agent that exits on its own with a failure (a non-zero status, or a
signal the daemon did not send) is restarted after a delay that doubles with
each restart in the window (1 s, 2 s, 4 s, ... at most 60 s), the way
Kubernetes backs off a ``CrashLoopBackOff`` container. After ``restart_max``
restarts within ``restart_window`` seconds it is not restarted again: it stays
in the host's report with ``crashloop: {exitStatus, signal, restarts, at}``
so that the relay and the dashboard show *why* it is not running, instead of
an agent that silently disappeared or one that restarts forever and burns
an API quota. An operator's ``restart`` command clears the record and starts
it afresh; ``shutdown`` removes it.

An exit with status 0 is an agent that finished its work: it leaves the
list as before and is not restarted (ADR 0026). A session that vanished
entirely (someone ran ``tmux kill-session``) was ended by a person: not
restarted either.

Pure: times are passed in (epoch ms); the daemon does the tmux calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.host.state import ManagedAgent

BASE_DELAY = 1.0
MAX_DELAY = 60.0


@dataclass(frozen=True)
class ExitSeen:
    """How an agent's program ended (tmux's ``pane_dead_status``/``pane_dead_signal``)."""

    status: int | None
    signal: int | None
    at: int

    @property
    def failed(self) -> bool:
        """A failure worth a restart: anything but a clean ``exit 0``."""
        return not (self.status == 0 and self.signal is None)

    @property
    def unknown(self) -> bool:
        """Neither a status nor a signal: tmux did not learn how it ended."""
        return self.status is None and self.signal is None

    def to_wire(self) -> dict[str, Any]:
        """``lastExit`` in the managed-agent report."""
        return {"status": self.status, "signal": self.signal, "at": self.at}


@dataclass(frozen=True)
class CrashLoopPolicy:
    """``--restart-max`` restarts in ``--restart-window`` seconds, with doubling delays."""

    restart_max: int = 5
    restart_window: float = 600.0
    base_delay: float = BASE_DELAY
    max_delay: float = MAX_DELAY

    def recent(self, restarts: list[int], now: int) -> list[int]:
        """The restart times that still count at ``now``."""
        window_ms = int(self.restart_window * 1000)
        return [t for t in restarts if now - t < window_ms]

    def delay(self, restarts_in_window: int) -> float:
        """Seconds to wait before the next restart."""
        return float(min(self.max_delay, self.base_delay * 2 ** min(restarts_in_window, 30)))

    def on_exit(self, agent: ManagedAgent, seen: ExitSeen) -> bool:
        """Record a failed exit on ``agent``; True when it is to be restarted later.

        False means it is now crash-looping (``agent.crashloop`` is set): it
        keeps its place in the report and is not started again.
        """
        agent.restarts = self.recent(agent.restarts, seen.at)
        # tmux does not always learn how a pane's program ended (seen with 3.3a
        # for a program that exits at once in a reused session name): the
        # record then keeps the last status that is known.
        known = agent.last_exit if seen.unknown and agent.last_exit else seen.to_wire()
        agent.last_exit = seen.to_wire()
        if len(agent.restarts) >= self.restart_max:
            agent.restart_due = None
            agent.crashloop = {
                "exitStatus": known.get("status"),
                "signal": known.get("signal"),
                "restarts": len(agent.restarts),
                "at": seen.at,
            }
            return False
        agent.restart_due = seen.at + int(self.delay(len(agent.restarts)) * 1000)
        return True

    def start_failed(self, agent: ManagedAgent, at: int) -> bool:
        """A restart that could not start the program: counted like a failed exit.

        Its ``lastExit`` stays how the program last *ended*: a start that
        failed ended no program, and recording "unknown" over a known exit
        would hide why the agent is being restarted (seen on a loaded machine:
        a SIGKILLed agent reported with neither status nor signal).
        """
        known = agent.last_exit
        again = self.on_exit(agent, ExitSeen(None, None, at))
        if known is not None:
            agent.last_exit = known
        return again

    @staticmethod
    def restarted(agent: ManagedAgent, at: int) -> None:
        """Count a restart the daemon just made."""
        agent.restarts = [*agent.restarts, at]
        agent.restart_due = None

    @staticmethod
    def reset(agent: ManagedAgent) -> None:
        """An operator's restart: start the count afresh."""
        agent.restarts = []
        agent.restart_due = None
        agent.last_exit = None
        agent.crashloop = None

    @staticmethod
    def waiting(agent: ManagedAgent) -> bool:
        """No session is expected: a restart is due later, or it gave up."""
        return agent.crashloop is not None or agent.restart_due is not None

    @staticmethod
    def due(agent: ManagedAgent, now: int) -> bool:
        """Its backoff is over: restart it now."""
        return agent.crashloop is None and agent.restart_due is not None and now >= agent.restart_due

    @staticmethod
    def running(agents: list[ManagedAgent]) -> int:
        """Agents that count against capacity: all but those given up on."""
        return sum(1 for a in agents if a.crashloop is None)
