"""Forgetting settled commands and messages (ADR 0036): only what is over, recorded once."""

from __future__ import annotations

import pytest
from eventsourcing.domain import Snapshot

from relay.domain.errors import NotFoundError
from relay.domain.message import Message
from relay.domain.orchestrator import Orchestrator


def host() -> Orchestrator:
    o = Orchestrator("o1", "host-1", "/srv/a", ["claude"], [], {}, "h", 1_000)
    for i in range(3):
        o.request_spawn(f"c{i}", "claude", None, None, "auto", None, "t", 1_001)
    o.record_command_result("c0", "done", None, None, 1_002)
    o.expire_commands(["c1"], "deadline passed", 1_003)
    o.collect_events()
    return o


def test_only_settled_commands_are_forgotten_and_recorded_once() -> None:
    o = host()
    assert o.forget_settled_commands(["c0", "c1", "c2", "nope", "c0"], 2_000) == ["c0", "c1"]
    [ev] = o.collect_events()
    assert type(ev).TOPIC == "SettledCommandsForgotten"  # type: ignore[attr-defined]
    assert ev.command_ids == ["c0", "c1"]  # type: ignore[attr-defined]
    assert set(o.commands) == {"c2"}  # the open one stays
    assert o.forget_settled_commands(["c0", "c2"], 2_001) == []
    assert o.collect_events() == []


def test_a_late_result_for_a_forgotten_command_is_not_found_by_name() -> None:
    o = host()
    o.forget_settled_commands(["c0"], 2_000)
    with pytest.raises(NotFoundError, match=r"'c0'.*forgotten"):
        o.record_command_result("c0", "done", None, None, 2_001)


def test_a_forgotten_command_stays_forgotten_through_a_snapshot() -> None:
    o = host()
    o.forget_settled_commands(["c0", "c1"], 2_000)
    o.collect_events()
    again = Snapshot.take(o).mutate(None)
    assert set(again.commands) == {"c2"}


def test_only_settled_messages_are_forgotten() -> None:
    m = Message("m1", "a", "b", "b", "message", None, "hi", {}, None, 1_000)
    assert not m.forget(1_001)  # pending
    m.claim("b", "k", 60_000, 1_002)
    assert not m.forget(1_003)  # claimed
    m.ack("b", "k", 1_004)
    assert m.forget(1_005)
    assert m.forgotten
    assert not m.forget(1_006)  # once
    topics = [type(e).TOPIC for e in m.collect_events()]  # type: ignore[attr-defined]
    assert topics.count("MessageForgotten") == 1
