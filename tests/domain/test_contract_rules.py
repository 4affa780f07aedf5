"""The contract rules of issue 12, pure: no IO, no clock (time is passed in)."""

from __future__ import annotations

import pytest

from relay.domain.errors import ConflictError, InvalidInputError
from relay.domain.orchestrator import Orchestrator
from relay.domain.rules import (
    MAX_ID_CHARS,
    MAX_ORCHESTRATOR_ID_CHARS,
    check_managed_agents,
    check_orchestrator_id,
    is_silent,
    orchestrator_agent_id,
)

STALE = 90_000


def make(at: int = 1_000) -> Orchestrator:
    o = Orchestrator(
        orchestrator_id="o1", hostname="h", base_dir="/srv/a", providers=["claude"],
        env_keys=[], meta={}, token_hash="x", at=at,
    )
    o.collect_events()
    return o


def test_the_longest_orchestrator_id_gives_the_longest_agent_id() -> None:
    oid = check_orchestrator_id("id", "o" * MAX_ORCHESTRATOR_ID_CHARS)
    assert len(orchestrator_agent_id(oid)) == MAX_ID_CHARS
    with pytest.raises(InvalidInputError, match=f"at most {MAX_ORCHESTRATOR_ID_CHARS}"):
        check_orchestrator_id("id", "o" * (MAX_ORCHESTRATOR_ID_CHARS + 1))


def test_silence_counts_from_last_seen_or_the_relay_start_whichever_is_later() -> None:
    assert not is_silent(1_000, 1_000 + STALE, STALE, 0)
    assert is_silent(1_000, 1_001 + STALE, STALE, 0)
    assert not is_silent(1_000, 1_001 + STALE, STALE, grace_from=5_000)


def test_commands_judge_liveness_at_the_time_given() -> None:
    o = make()
    o.request_spawn("c1", "claude", None, None, "guarded", None, "op", 1_000 + STALE, STALE, 0)
    with pytest.raises(ConflictError, match=r"silent for 90\.001 s"):
        o.request_spawn("c2", "claude", None, None, "guarded", None, "op", 1_001 + STALE, STALE, 0)
    with pytest.raises(ConflictError, match="offline"):
        o.request_action("c3", "restart", None, "op", 1_001 + STALE, STALE, 0)
    assert [type(e).TOPIC for e in o.collect_events()] == ["SpawnRequested"]  # type: ignore[attr-defined]
    # Without a stale-after the recorded status alone decides (as before).
    o.request_action("c4", "restart", None, "op", 10**12)


def test_managed_agents_must_work_inside_the_base_dir() -> None:
    check_managed_agents("/srv/a", [{"agentId": "m", "cwd": "/srv/a/x"}, {"agentId": "n"}])
    with pytest.raises(InvalidInputError) as e:
        check_managed_agents("/srv/a", [{"agentId": "m", "cwd": "/srv/a"},
                                        {"agentId": "n", "cwd": "/srv/ab"}])
    assert e.value.field == "agents[1].cwd" and "'n'" in str(e.value)
    o = make()
    with pytest.raises(InvalidInputError, match="'m' works in '/etc'"):
        o.report_managed_agents([{"agentId": "m", "cwd": "/etc"}], 2_000)
    assert o.collect_events() == []
