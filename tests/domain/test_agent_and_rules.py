"""Domain rules of the agent aggregate and the pure rule functions."""

from __future__ import annotations

import pytest

from relay.domain.agent import Agent
from relay.domain.errors import InvalidInputError, NotFoundError
from relay.domain.rules import check_env_key, check_id, confine_cwd


def make() -> Agent:
    return Agent(
        agent_id="a1", name="A", label=None, tags=["t"], machine="m", capabilities=[], meta={}, at=10
    )


def test_agent_lifecycle_events() -> None:
    a = make()
    a.heartbeat(20)
    assert a.reap(now=200, judged_last_seen=20, stale_after_ms=100, grace_from=0)
    a.heartbeat(300)
    a.remove(400)
    names = [type(e).TOPIC for e in a.collect_events()]  # type: ignore[attr-defined]
    assert names == [
        "AgentRegistered",
        "AgentHeartbeatReceived",
        "AgentReaped",
        "AgentHeartbeatReceived",
        "AgentRemoved",
    ]


def test_removed_agent_refuses_heartbeat_and_remove_until_reregistered() -> None:
    a = make()
    a.remove(20)
    with pytest.raises(NotFoundError):
        a.heartbeat(30)
    with pytest.raises(NotFoundError):
        a.remove(30)
    assert not a.reap(now=10**6, judged_last_seen=a.last_seen, stale_after_ms=1, grace_from=0)
    a.reregister("B", "lbl", [], None, [], {}, 50)
    assert (a.status, a.name, a.created_at) == ("online", "B", 50)


def test_reregistering_a_live_agent_updates_fields_and_keeps_created_at() -> None:
    a = make()
    a.reap(now=500, judged_last_seen=10, stale_after_ms=100, grace_from=0)
    a.reregister("B", "lbl", ["x"], "m2", ["c"], {"k": 1}, 600)
    assert (a.status, a.name, a.tags, a.created_at, a.last_seen) == ("online", "B", ["x"], 10, 600)


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "a\tb", "x" * 121, 5, None, "a\x00"])
def test_check_id_refuses(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="id"):
        check_id("id", bad)


@pytest.mark.parametrize("good", ["a", "x" * 120, "host-1.example_2:3", "ünïcode"])
def test_check_id_accepts(good: str) -> None:
    assert check_id("id", good) == good


@pytest.mark.parametrize("bad", ["A=1", "1ABC", "", "with space", "a-b"])
def test_env_keys_are_names_never_values(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="envKeys"):
        check_env_key("envKeys", bad)


def test_confine_cwd_compares_components_not_prefixes() -> None:
    assert confine_cwd("/srv/a", "/srv/a/b") == "/srv/a/b"
    assert confine_cwd("/srv/a/", "b/../c") == "/srv/a/c"
    for outside in ("/srv/a2", "/srv/ab/c", "//srv/a2", "/srv/a/../a2"):
        with pytest.raises(InvalidInputError):
            confine_cwd("/srv/a", outside)
