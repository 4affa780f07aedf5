"""Needs-input and answers on the orchestrator aggregate (issue 16, ADR 0032, 0033): no IO."""

from __future__ import annotations

import re
from typing import Any

import pytest
from eventsourcing.domain import Snapshot

from relay.domain.errors import ConflictError, InvalidInputError, NotFoundError
from relay.domain.orchestrator import Orchestrator
from relay.domain.rules import MAX_INPUT_CHARS


def host(*agent_ids: str) -> Orchestrator:
    o = Orchestrator("o1", "host-1", "/srv/a", ["claude"], [], {}, "h", 1_000)
    agents = [{"agentId": a, "provider": "claude", "tmuxSession": f"relay-{a}", "cwd": "/srv/a"}
              for a in agent_ids]
    o.report_managed_agents(agents, 1_001)
    o.collect_events()
    return o


def events(o: Orchestrator) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for e in o.collect_events():
        fields = {k: v for k, v in e.__dict__.items() if not k.startswith(("originator", "timestamp"))}
        out.append((type(e).TOPIC, fields))  # type: ignore[attr-defined]
    return out


def test_attention_is_recorded_once_and_a_repeat_is_no_news() -> None:
    o = host("m1")
    assert o.report_attention("m1", "input", "matched Proceed", "Proceed? [y/N]", 2_000)
    assert not o.report_attention("m1", "input", "matched Proceed", "Proceed? [y/N]", 2_100)
    assert events(o) == [(
        "AgentAwaitingInput",
        {"agent_id": "m1", "attention": "input", "reason": "matched Proceed",
         "excerpt": "Proceed? [y/N]", "at": 2_000},
    )]
    assert o.attention == {"m1": {"attention": "input", "reason": "matched Proceed", "since": 2_000}}
    # Another reason (the provider's hook after the generic rule) or idle -> input is news.
    assert o.report_attention("m1", "input", "permission_prompt: Bash", "", 2_200)
    assert o.report_attention("m1", "idle", "no output for 30s", "", 2_300)
    assert [t for t, _ in events(o)] == ["AgentAwaitingInput", "AgentAwaitingInput"]


def test_null_resumes_only_an_agent_that_waits() -> None:
    o = host("m1")
    assert not o.report_attention("m1", None, "output", "", 2_000)
    assert events(o) == []
    o.report_attention("m1", "idle", "no output for 30s", "", 2_100)
    assert o.report_attention("m1", None, "output", "", 2_200)
    assert events(o)[-1] == (
        "AgentInputResumed", {"agent_id": "m1", "reason": "output", "at": 2_200, "command_id": None}
    )
    assert o.attention == {}


def test_attention_is_only_about_a_managed_agent_and_bounded_printable() -> None:
    o = host("m1")
    with pytest.raises(NotFoundError, match="no managed agent 'ghost'"):
        o.report_attention("ghost", "input", "", "", 2_000)
    with pytest.raises(InvalidInputError, match="attention"):
        o.report_attention("m1", "maybe", "", "", 2_000)
    with pytest.raises(InvalidInputError, match="excerpt: holds the control character U\\+001B"):
        o.report_attention("m1", "input", "", "red \x1b[31m", 2_000)
    with pytest.raises(InvalidInputError, match="reason: must be at most 200"):
        o.report_attention("m1", "input", "r" * 201, "", 2_000)
    assert events(o) == []
    o.report_attention("m1", "input", "tab\tand\nnewline are text", "a\n\tb", 2_000)


def test_an_agent_no_longer_reported_waits_for_nobody() -> None:
    o = host("m1", "m2")
    o.report_attention("m1", "input", "q", "", 2_000)
    o.report_attention("m2", "idle", "i", "", 2_000)
    o.report_managed_agents([{"agentId": "m2", "provider": "claude", "tmuxSession": "s"}], 2_100)
    assert set(o.attention) == {"m2"}


def test_input_is_a_command_with_its_text_in_the_log() -> None:
    o = host("m1")
    o.request_input("c1", "m1", "$(reboot) C-c 'q' \"q\" é", True, "operator", 2_000)
    assert events(o) == [(
        "InputRequested",
        {"command_id": "c1", "agent_id": "m1", "text": "$(reboot) C-c 'q' \"q\" é", "enter": True,
         "requested_by": "operator", "at": 2_000, "deadline_at": None},
    )]
    assert o.commands == {"c1": "pending"} and o.input_commands == {"c1": "m1"}
    with pytest.raises(ConflictError, match="already exists"):
        o.request_input("c1", "m1", "y", True, "operator", 2_001)


@pytest.mark.parametrize(
    ("text", "enter", "problem"),
    [
        ("x" * (MAX_INPUT_CHARS + 1), True, "at most 4000"),
        ("\x03", True, "U+0003"),  # Ctrl-C as a byte steers the terminal: refused
        ("a\rb", True, "U+000D"),
        ("\x1b[A", True, "U+001B"),
        ("a\x7f", True, "U+007F"),
        ("", False, "nothing to type"),
    ],
)
def test_input_refuses_control_characters_and_nothing(text: str, enter: bool, problem: str) -> None:
    o = host("m1")
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        o.request_input("c1", "m1", text, enter, "operator", 2_000)
    assert events(o) == [] and o.commands == {}


def test_input_needs_a_managed_agent_on_a_host_that_is_online() -> None:
    o = host("m1")
    with pytest.raises(NotFoundError):
        o.request_input("c1", "ghost", "y", True, "operator", 2_000)
    o.reap(10**7, o.last_seen, 1, 0)
    with pytest.raises(ConflictError, match="offline"):
        o.request_input("c1", "m1", "y", True, "operator", 10**7)
    assert o.commands == {}


def test_a_done_input_resumes_the_agent_it_answered() -> None:
    o = host("m1", "m2")
    o.report_attention("m1", "input", "q", "", 2_000)
    o.request_input("c1", "m1", "y", True, "operator", 2_100)
    o.request_input("c2", "m2", "y", True, "operator", 2_100)  # m2 waits for nothing
    o.collect_events()
    o.record_command_result("c2", "done", None, "m2", 2_200)
    assert [t for t, _ in events(o)] == ["CommandResultRecorded"]
    o.record_command_result("c1", "done", None, "m1", 2_300)
    assert events(o)[-1] == (
        "AgentInputResumed", {"agent_id": "m1", "reason": "input sent", "at": 2_300, "command_id": "c1"}
    )
    assert o.attention == {} and o.input_commands == {}


def test_a_failed_or_expired_input_leaves_the_agent_waiting() -> None:
    o = host("m1")
    o.report_attention("m1", "input", "q", "", 2_000)
    o.request_input("c1", "m1", "y", True, "operator", 2_100, deadline_at=3_000)
    o.request_input("c2", "m1", "y", True, "operator", 2_100)
    o.collect_events()
    o.record_command_result("c2", "failed", "the pane ended", None, 2_200)
    o.expire_commands(o.overdue_commands(3_001), "deadline passed", 3_001)
    assert [t for t, _ in events(o)] == ["CommandResultRecorded", "CommandExpired"]
    assert "m1" in o.attention and o.input_commands == {}


def test_a_v2_snapshot_loads_with_no_attention() -> None:
    """Snapshots taken before issue 16 (class_version 2) are upcast, never edited."""
    o = host("m1")
    snap = Snapshot.take(o)
    state = dict(snap.state)
    assert state.pop("class_version") == 3
    del state["attention"], state["input_commands"]
    old = Snapshot(
        originator_id=snap.originator_id,
        originator_version=snap.originator_version,
        timestamp=snap.timestamp,
        topic=snap.topic,
        state={**state, "class_version": 2},
    )
    loaded = old.mutate(None)
    assert loaded.attention == {} and loaded.input_commands == {}
    assert loaded.report_attention("m1", "input", "q", "", 5_000)
