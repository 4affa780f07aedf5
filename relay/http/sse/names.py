"""The event stream's names: what each change of the read models is called on the wire.

The read models say what changed (``relay.projections.fold.Changed``); the
names a client sees (``event: agent.status``), their family (the part before
the ``.``, which ``?types=`` filters on) and which orchestrator or agents a
frame concerns (``?orchestrator=``, ``?agent=``) are decided here, beside the
rest of the stream, and nowhere else. A stored log holds no SSE name, so a
rename here is a contract change, not a log migration.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from relay.projections.fold import Changed


class Scope(Enum):
    """How a frame's payload names what it is about, for the scoped filters."""

    ORCHESTRATOR = "orchestrator"  # the payload is the orchestrator: data["id"]
    OWNER = "owner"  # the payload belongs to one: data["orchestratorId"]
    AGENT = "agent"  # the payload is the agent: data["id"]
    ENDS = "ends"  # a message: its recipient and its sender
    NONE = "none"  # about the relay itself


class Naming(NamedTuple):
    """One change kind on the wire."""

    name: str  # the SSE ``event:`` name
    family: str  # the part before the "."
    scope: Scope
    head: bytes  # b"\nevent: <name>\ndata: ", ready to join


def _naming(name: str, scope: Scope) -> Naming:
    return Naming(name, name.partition(".")[0], scope, b"\nevent: " + name.encode() + b"\ndata: ")


NAMES: dict[Changed, Naming] = {
    Changed.AGENT: _naming("agent.status", Scope.AGENT),
    Changed.AGENT_REMOVED: _naming("agent.removed", Scope.AGENT),
    Changed.ORCHESTRATOR: _naming("orchestrator.status", Scope.ORCHESTRATOR),
    Changed.ORCHESTRATOR_REMOVED: _naming("orchestrator.removed", Scope.ORCHESTRATOR),
    Changed.COMMAND: _naming("orchestrator.command", Scope.OWNER),
    Changed.ATTENTION: _naming("orchestrator.attention", Scope.OWNER),
    Changed.MESSAGE_NEW: _naming("message.new", Scope.ENDS),
    Changed.MESSAGE_CLAIMED: _naming("message.claimed", Scope.ENDS),
    Changed.MESSAGE_CLAIM_RELEASED: _naming("message.claim_released", Scope.ENDS),
    Changed.MESSAGE_ACKED: _naming("message.acked", Scope.ENDS),
    Changed.MESSAGE_DELETED: _naming("message.deleted", Scope.ENDS),
    Changed.REAPER: _naming("system.reaper", Scope.NONE),
}

# What ``?types=`` may name: every family a frame can have.
FAMILIES = frozenset(n.family for n in NAMES.values())
