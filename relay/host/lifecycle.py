"""The host's side of the fleet lifecycle (issue 15): capacity, pace, deadlines, progress.

Kept apart from the daemon's loops so the rules are plain functions a unit
test can drive, and so the daemon's parts only call them at a few hooks:

- registration sends ``maxAgents`` and ``labels`` (``--max-agents``,
  ``--label KEY=VALUE``) so the relay places spawns by free capacity;
- the registration answer's ``heartbeatIntervalMs`` sets the heartbeat pace:
  the relay knows its own ``--stale-after``, the host does not, and two
  settings that must agree are one too many (hosts flapping offline expire
  their commands). ``--stale-after`` stays as the fallback for an older relay;
- heartbeats carry ``load.activeAgents`` (agents that run, not ones given up
  on as crash-looping), so the relay's capacity view is the host's own count;
- a command is started only before its ``deadlineAt`` and only after the
  relay accepted ``POST .../progress {"status": "running"}``: past the deadline
  the relay expires it, and a 409 on progress means it already did (or the
  command is over), so starting it anyway would act on a command the relay
  has given up on.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.host.config import HostConfigError

# What the relay's registration accepts (relay/wire/shapes.py OrchestratorRegistration).
MAX_LABELS = 32
MAX_LABEL_CHARS = 100
MAX_AGENTS_LIMIT = 100_000
_LABEL_KEY = re.compile(r"[^\s=]+")


@dataclass(frozen=True)
class LifecycleConfig:
    """``relay host`` options of issue 15, validated."""

    max_agents: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    restart_max: int = 5
    restart_window: float = 600.0

    def registration_fields(self) -> dict[str, Any]:
        """What registration adds to the payload; nothing when nothing was set."""
        out: dict[str, Any] = {}
        if self.max_agents is not None:
            out["maxAgents"] = self.max_agents
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


def add_lifecycle_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-agents``, ``--label``, ``--restart-max``, ``--restart-window``."""
    parser.add_argument("--max-agents", type=int, default=None, metavar="N",
                        help="the most agents this host runs at once; the relay places no "
                        "spawn on a full host (default: no limit)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="a label a spawn's selector can match, e.g. gpu=a100; repeat "
                        "for each label")
    parser.add_argument("--restart-max", type=int, default=5, metavar="N",
                        help="restarts of an agent that keeps exiting, within "
                        "--restart-window, before it is reported as crash-looping (default 5)")
    parser.add_argument("--restart-window", type=float, default=600.0, metavar="SECONDS",
                        help="the window --restart-max counts in (default 600)")


def parse_labels(specs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs into a map, within the relay's limits; a key twice is a mistake."""
    labels: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not _LABEL_KEY.fullmatch(key):
            raise HostConfigError(f"--label {spec!r}: expected KEY=VALUE, e.g. gpu=a100")
        if len(key) > MAX_LABEL_CHARS or len(value) > MAX_LABEL_CHARS:
            raise HostConfigError(
                f"--label {key}: keys and values are at most {MAX_LABEL_CHARS} characters"
            )
        if key in labels:
            raise HostConfigError(f"--label {key} is given twice")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise HostConfigError(f"at most {MAX_LABELS} --label options")
    return labels


def lifecycle_from_args(args: argparse.Namespace) -> LifecycleConfig:
    """Validate the options added by ``add_lifecycle_arguments``."""
    max_agents = getattr(args, "max_agents", None)
    if max_agents is not None and not 1 <= max_agents <= MAX_AGENTS_LIMIT:
        raise HostConfigError(f"--max-agents must be from 1 to {MAX_AGENTS_LIMIT}")
    restart_max = getattr(args, "restart_max", 5)
    restart_window = getattr(args, "restart_window", 600.0)
    if restart_max < 0:
        raise HostConfigError("--restart-max must be 0 or more")
    if restart_window <= 0:
        raise HostConfigError("--restart-window must be positive")
    return LifecycleConfig(
        max_agents=max_agents,
        labels=parse_labels(getattr(args, "label", None) or []),
        restart_max=restart_max,
        restart_window=restart_window,
    )


def heartbeat_interval(answer: Any, fallback: float, floor: float = 0.2) -> float:
    """Seconds between heartbeats: the relay's ``heartbeatIntervalMs``, else ``fallback``.

    Anything odd in the answer (missing, not a positive number) falls back:
    an older relay sends nothing, and a host must never stop beating.
    """
    value = answer.get("heartbeatIntervalMs") if isinstance(answer, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return fallback
    return max(value / 1000.0, floor)


def deadline_passed(command: Mapping[str, Any], now_ms: int) -> bool:
    """True when the command carries a ``deadlineAt`` that ``now_ms`` is past.

    A command without one (an older relay) has no deadline.
    """
    deadline = command.get("deadlineAt")
    if isinstance(deadline, bool) or not isinstance(deadline, int):
        return False
    return now_ms > deadline


def load_report(active_agents: int) -> dict[str, Any]:
    """A heartbeat's ``load``."""
    return {"activeAgents": max(active_agents, 0)}
