"""What the read models and the messages fold share: the change type and the fold's view.

relay.projections.readmodels builds the messages read model and dispatches
Message events to relay.projections.messages; those handlers take the read
models back as an argument. Both import this module instead of each other, so
the package has no cycle (ADR 0028).
"""

from __future__ import annotations

from typing import Any, Protocol

# (SSE event name, payload): what applying one event changed, for the stream.
Change = tuple[str, dict[str, Any]]


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
