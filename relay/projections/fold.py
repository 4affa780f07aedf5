"""What the read models and the messages fold share: the change type and the fold's view.

relay.projections.readmodels builds the messages read model and dispatches
Message events to relay.projections.messages; those handlers take the read
models back as an argument. Both import this module instead of each other, so
the package has no cycle (ADR 0028).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Protocol


class Changed(IntEnum):
    """What applying one event changed, in the read models' own terms.

    The read models say *what* changed and hand over the record; how that is
    named on the wire is the event stream's business (``relay.http.sse.names``),
    so renaming an SSE event never touches a fold.
    """

    AGENT = 0  # an agent's record (registered, beat, status flipped)
    AGENT_REMOVED = 1  # an agent is gone: the payload is {"id": ...}
    ORCHESTRATOR = 2  # an orchestrator's record
    ORCHESTRATOR_REMOVED = 3  # an orchestrator is gone: {"id": ...}
    COMMAND = 4  # one command of an orchestrator (requested, started, settled)
    ATTENTION = 5  # one managed agent whose attention changed (ADR 0032)
    MESSAGE_NEW = 6  # a message reached an inbox
    MESSAGE_CLAIMED = 7
    MESSAGE_CLAIM_RELEASED = 8  # released or expired: back in the inbox
    MESSAGE_ACKED = 9
    MESSAGE_DELETED = 10
    REAPER = 11  # the reaper was suspended or resumed


# (what changed, payload): what applying one event changed, for the stream.
Change = tuple[Changed, dict[str, Any]]


class FoldTarget(Protocol):
    """The read models as the messages fold uses them (ReadModels satisfies it)."""

    messages: Any  # relay.projections.messages.Messages
    agents: dict[str, dict[str, Any]]
    commands: dict[str, dict[str, Any]]
    settled_commands: dict[str, int]
    entities: dict[str, list[Any]]
    position_applying: int

    def _entity(self, event: Any) -> list[Any]: ...

    def _named(self, event: Any, kind: str, natural_id: str) -> None: ...
