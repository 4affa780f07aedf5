"""What one subscriber asked for, and the frames that lets through.

Subscribers with the same filter share one selection per delivered batch
(``EventHub._send``), so ``Filter.key`` is what groups them.
"""

from __future__ import annotations

from relay.domain.errors import InvalidInputError
from relay.http.sse.encoding import Frame
from relay.http.sse.names import FAMILIES


class Filter:
    """What one subscriber asked for: families (``?types=``), and one orchestrator
    (its status and commands) or one agent (its record and its messages)."""

    __slots__ = ("agent", "families", "key", "orchestrator")

    def __init__(
        self,
        families: frozenset[str] | None = None,
        orchestrator: str | None = None,
        agent: str | None = None,
    ) -> None:
        self.families = families  # None: every family
        self.orchestrator = orchestrator
        self.agent = agent
        self.key = (families, orchestrator, agent)

    def accepts(self, f: Frame) -> bool:
        if self.families is not None and f.family not in self.families:
            return False
        if self.orchestrator is not None:
            return f.family == "orchestrator" and f.orchestrator == self.orchestrator
        return self.agent is None or self.agent in f.agents

    def select(self, frames: list[Frame]) -> bytes:
        """The bytes of ``frames`` this filter lets through (b"" for none)."""
        if self.families is None and self.orchestrator is None and self.agent is None:
            return b"".join(f.data for f in frames)
        return b"".join(f.data for f in frames if self.accepts(f))


def families_of(raw_types: str | None) -> frozenset[str] | None:
    """``?types=agent,message`` as families (None: every family); unknown ones are refused."""
    if not raw_types:
        return None
    families = frozenset(t.strip() for t in raw_types.split(",") if t.strip())
    if not families or families - FAMILIES:
        raise InvalidInputError(
            "types",
            f"must be a comma-separated list of {', '.join(sorted(FAMILIES))}; got {raw_types!r}",
        )
    return families
