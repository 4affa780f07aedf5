"""The use cases over a plain dict: no store, no clock, no thread (relay/usecases.py, ADR 0030).

A port that is a dict is enough to run them, which is the point: what a
command decides is a function of the aggregates it is given and the command.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from relay import commands as c
from relay import usecases
from relay.domain.errors import NotFoundError
from relay.domain.message import Message
from relay.domain.orchestrator import Orchestrator


class DictAggregates:
    """The ``Aggregates`` port over a dict (what ``RelayApp`` is over its store)."""

    def __init__(self) -> None:
        self.by_id: dict[UUID, Any] = {}

    def find(self, cls: type[Any], natural_id: str, at_least: int = 0) -> Any:
        return self.by_id.get(cls.create_id(natural_id))

    def add(self, aggregate: Any) -> None:
        self.by_id[aggregate.id] = aggregate


def _registered(port: DictAggregates) -> Orchestrator:
    usecases.decide(port, c.RegisterOrchestrator.of("o1", "h", "/srv", ["claude"], [], {}, "0" * 64, 1_000))
    found = port.find(Orchestrator, "o1")
    assert isinstance(found, Orchestrator)
    return found


def test_a_spawn_returns_the_orchestrator_and_its_control_message_together() -> None:
    port = DictAggregates()
    orch = _registered(port)
    cmd = c.RequestSpawn("o1", "cmd-1", "claude", "work", None, "default", None, "op", 2_000)
    result, touched = usecases.decide(port, cmd)
    assert result == "cmd-1"
    assert touched[0] is orch
    note = touched[1]
    assert isinstance(note, Message) and note.recipient == "orchestrator-o1"
    sent = note.pending_events[0].meta["orchestratorControl"]  # type: ignore[attr-defined]
    assert sent["cwd"] == "/srv/work"  # confined to the baseDir
    assert port.find(Message, "cmd-1") is note  # added through the port, as a new aggregate
    assert [type(e).__name__ for e in orch.pending_events][-1] == "SpawnRequested"


def test_a_refusal_changes_nothing() -> None:
    port = DictAggregates()
    with pytest.raises(NotFoundError):
        usecases.decide(port, c.HeartbeatOrchestrator("nobody", 1_000))
    assert port.by_id == {}


def test_a_direct_message_to_nobody_is_refused_and_to_the_orchestrators_inbox_delivered() -> None:
    port = DictAggregates()
    _registered(port)
    send = c.SendMessage("op", "x", "text", None, "hi", {}, None, (c.Delivery("m1", "x"),), 2_000)
    with pytest.raises(NotFoundError):
        usecases.decide(port, send)
    to_host = c.SendMessage(
        "op", "orchestrator-o1", "text", None, "hi", {}, None, (c.Delivery("m2", "orchestrator-o1"),), 2_000
    )
    ids, touched = usecases.decide(port, to_host)
    assert ids == ["m2"] and touched[0].recipient == "orchestrator-o1"
