"""Domain rules of the orchestrator aggregate: no IO, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from relay.domain.errors import ConflictError, InvalidInputError, NotFoundError
from relay.domain.orchestrator import Orchestrator


def make(**over: Any) -> Orchestrator:
    fields: dict[str, Any] = {
        "orchestrator_id": "o1",
        "hostname": "host-1",
        "base_dir": "/srv/a",
        "providers": ["claude"],
        "env_keys": ["API_KEY"],
        "meta": {},
        "token_hash": "h",
        "at": 1_000,
    }
    fields.update(over)
    return Orchestrator(**fields)


def topics(o: Orchestrator) -> list[str]:
    return [type(e).TOPIC for e in o.collect_events()]  # type: ignore[attr-defined]


def test_registration_records_one_event_and_starts_online() -> None:
    o = make()
    assert topics(o) == ["OrchestratorRegistered"]
    assert (o.status, o.last_seen, o.created_at) == ("online", 1_000, 1_000)


def test_id_is_derived_from_the_natural_id() -> None:
    assert make().id == Orchestrator.create_id("o1")
    assert Orchestrator.create_id("o1") != Orchestrator.create_id("o2")


def test_heartbeat_moves_last_seen_and_never_back() -> None:
    o = make()
    o.heartbeat(2_000)
    o.heartbeat(1_500)
    assert o.last_seen == 2_000
    assert topics(o)[1:] == ["OrchestratorHeartbeatReceived"] * 2


def test_spawn_resolves_cwd_inside_base_dir() -> None:
    o = make()
    o.request_spawn("c1", "claude", "proj", "lbl", "guarded", "hi", "op", 1_100)
    events = o.collect_events()
    assert events[-1].cwd == "/srv/a/proj"  # type: ignore[attr-defined]
    assert o.commands == {"c1": "pending"}


@pytest.mark.parametrize("cwd", ["/srv/a2", "/srv/a/../b", "..", "/", "/srv", "/srv/a/x/../../b"])
def test_spawn_refuses_cwd_outside_base_dir(cwd: str) -> None:
    o = make()
    o.collect_events()
    with pytest.raises(InvalidInputError, match="cwd"):
        o.request_spawn("c1", "claude", cwd, None, "guarded", None, "op", 1_100)
    assert o.collect_events() == []


@pytest.mark.parametrize("cwd", ["/srv/a", "/srv/a/", "/srv/a/x/../y", "", None, "./x"])
def test_spawn_accepts_cwd_inside_base_dir(cwd: str | None) -> None:
    make().request_spawn("c1", "claude", cwd, None, "guarded", None, "op", 1_100)


def test_spawn_refuses_a_provider_not_offered() -> None:
    o = make(providers=["claude"])
    with pytest.raises(InvalidInputError, match="provider"):
        o.request_spawn("c1", "codex", None, None, "guarded", None, "op", 1_100)


def test_spawn_refuses_an_overlong_prompt() -> None:
    with pytest.raises(InvalidInputError, match="prompt"):
        make().request_spawn("c1", "claude", None, None, "guarded", "x" * 4001, "op", 1_100)
    make().request_spawn("c1", "claude", None, None, "guarded", "x" * 4000, "op", 1_100)


def test_no_spawn_or_action_to_an_offline_orchestrator() -> None:
    o = make()
    assert o.reap(now=200_000, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)
    o.collect_events()
    with pytest.raises(ConflictError, match="offline"):
        o.request_spawn("c1", "claude", None, None, "guarded", None, "op", 200_001)
    with pytest.raises(ConflictError, match="offline"):
        o.request_action("c2", "restart", None, "op", 200_001)
    assert o.collect_events() == []


def test_action_on_unknown_managed_agent_is_not_found() -> None:
    o = make()
    o.report_managed_agents([{"agentId": "m1"}], 1_001)
    o.request_action("c1", "restart", "m1", "op", 1_002)
    with pytest.raises(NotFoundError, match="m2"):
        o.request_action("c2", "shutdown", "m2", "op", 1_003)


def test_exactly_one_result_per_command() -> None:
    o = make()
    o.request_spawn("c1", "claude", None, None, "guarded", None, "op", 1_100)
    o.record_command_result("c1", "done", None, "agent-1", 1_200)
    with pytest.raises(ConflictError, match="already has a result"):
        o.record_command_result("c1", "failed", "x", None, 1_300)
    with pytest.raises(NotFoundError):
        o.record_command_result("nope", "done", None, None, 1_300)
    assert o.commands == {"c1": "done"}


def test_removed_stays_removed_until_registered_again() -> None:
    o = make()
    o.request_spawn("c1", "claude", None, None, "guarded", None, "op", 1_100)
    o.remove(1_200)
    o.collect_events()
    for attempt in (
        lambda: o.heartbeat(1_300),
        lambda: o.report_managed_agents([], 1_300),
        lambda: o.request_spawn("c2", "claude", None, None, "guarded", None, "op", 1_300),
        lambda: o.record_command_result("c1", "done", None, None, 1_300),
        lambda: o.remove(1_300),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    assert not o.reap(now=10**9, judged_last_seen=o.last_seen, stale_after_ms=1, grace_from=0)
    assert o.collect_events() == []
    o.reregister("host-2", "/srv/b", ["codex"], [], {}, "h2", 5_000)
    assert (o.status, o.created_at, o.last_seen, o.commands, o.managed_agents) == (
        "online", 5_000, 5_000, {}, []
    )


def test_reregistration_of_a_live_orchestrator_keeps_its_history() -> None:
    o = make()
    o.report_managed_agents([{"agentId": "m1"}], 1_001)
    o.reregister("host-1b", "/srv/c", ["claude", "codex"], [], {"k": 1}, "h2", 2_000)
    assert (o.created_at, o.hostname, o.base_dir, o.managed_agents) == (
        1_000, "host-1b", "/srv/c", [{"agentId": "m1"}]
    )


def test_reap_only_when_stale_strictly_after_stale_after() -> None:
    o = make()
    assert not o.reap(now=91_000, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)
    assert o.reap(now=91_001, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)
    assert o.status == "offline"
    # idempotent: already offline
    assert not o.reap(now=91_001, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)


def test_reap_loses_to_a_heartbeat_after_the_judgement() -> None:
    o = make()
    o.heartbeat(50_000)  # committed after the reaper judged last_seen=1_000
    assert not o.reap(now=200_000, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)
    assert o.status == "online"


def test_grace_after_relay_start_counts_as_last_seen() -> None:
    o = make()
    assert not o.reap(now=150_000, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=100_000)
    assert o.reap(now=190_001, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=100_000)


def test_reap_leaves_managed_agents_and_commands_alone() -> None:
    o = make()
    o.report_managed_agents([{"agentId": "m1"}], 1_001)
    o.request_spawn("c1", "claude", None, None, "guarded", None, "op", 1_002)
    assert o.reap(now=100_000, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)
    assert o.managed_agents == [{"agentId": "m1"}]
    assert o.commands == {"c1": "pending"}


def test_heartbeat_brings_a_reaped_orchestrator_back() -> None:
    o = make()
    o.reap(now=100_000, judged_last_seen=1_000, stale_after_ms=90_000, grace_from=0)
    o.heartbeat(100_001)
    assert o.status == "online"
    assert topics(o)[-2:] == ["OrchestratorReaped", "OrchestratorHeartbeatReceived"]
