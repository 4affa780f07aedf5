"""The host's side of issue 15 with a real relay, the real daemon and real tmux.

The relay sets the heartbeat pace; the host declares its capacity and labels
and reports its load; it marks a command running before it starts it, and
never starts one past its deadline or one the relay has already ended.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pytest

from relay.host.config import HostConfigError
from relay.host.lifecycle import (
    add_lifecycle_arguments,
    deadline_passed,
    heartbeat_interval,
    lifecycle_from_args,
)
from tests.host.conftest import HostProcess, HostWorld, Tmux, requires_tmux, wait_for


def _world(tmp_path: Path, tmux: Tmux, *relay_args: str) -> HostWorld:
    w = HostWorld(tmp_path, tmux, relay_args=list(relay_args))
    w.relay.start()
    return w


@pytest.fixture
def slow_reaper_world(tmp_path: Path, tmux_socket: Tmux) -> Any:
    """A relay whose reaper runs once an hour: commands outlive their deadline as pending."""
    w = _world(tmp_path, tmux_socket, "--reap-every", "3600")
    yield w
    w.close()


# -- pure rules ---------------------------------------------------------------------


def test_the_heartbeat_pace_is_the_relays_and_falls_back_for_an_older_relay() -> None:
    assert heartbeat_interval({"heartbeatIntervalMs": 500}, 30.0) == 0.5
    assert heartbeat_interval({}, 30.0) == 30.0  # a relay from before issue 15
    for odd in (None, 0, -5, True, "500", 1.5e-9):
        assert heartbeat_interval({"heartbeatIntervalMs": odd}, 30.0) in (30.0, 0.2)
    assert heartbeat_interval(None, 7.0) == 7.0


def test_a_deadline_is_passed_only_after_it() -> None:
    assert not deadline_passed({"deadlineAt": 1000}, 1000)
    assert deadline_passed({"deadlineAt": 1000}, 1001)
    assert not deadline_passed({}, 10**15)  # no deadline: an older relay
    assert not deadline_passed({"deadlineAt": None}, 10**15)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_lifecycle_arguments(parser)
    return parser.parse_args(list(argv))


def test_lifecycle_options_are_checked() -> None:
    lc = lifecycle_from_args(_parse("--max-agents", "4", "--label", "gpu=a100", "--label", "z=b="))
    assert lc.registration_fields() == {"maxAgents": 4, "labels": {"gpu": "a100", "z": "b="}}
    assert lifecycle_from_args(_parse()).registration_fields() == {}
    for bad, words in (
        (("--max-agents", "0"), "--max-agents"),
        (("--label", "novalue"), "KEY=VALUE"),
        (("--label", "a=1", "--label", "a=2"), "twice"),
        (("--label", "k=" + "v" * 101), "100"),
        (("--restart-max", "-1"), "--restart-max"),
        (("--restart-window", "0"), "--restart-window"),
    ):
        with pytest.raises(HostConfigError, match=words):
            lifecycle_from_args(_parse(*bad))


# -- end to end ---------------------------------------------------------------------


@requires_tmux
def test_the_host_heartbeats_at_the_pace_the_relay_sets(tmp_path: Path, tmux_socket: Tmux) -> None:
    # The relay calls a host stale after 1.5 s and asks for a beat every 0.5 s;
    # the host was told (wrongly) that stale-after is 90 s, a beat every 30 s.
    world = _world(tmp_path, tmux_socket, "--stale-after", "1.5", "--reap-every", "0.5")
    try:
        host = world.host_args()
        host[host.index("--stale-after") + 1] = "90"
        world.hosts.append(HostProcess(host, world.root / "host.log").start())
        world.wait_online()
        seen: set[int] = set()

        def beats() -> bool:
            o = world.api.orchestrator(world.oid)
            assert o is not None and o["status"] == "online", (o, world.host_log())
            seen.add(o["lastSeen"])
            return len(seen) >= 6

        # Six distinct beats take ~3 s at the relay's pace; at 30 s a beat the
        # host would be reaped offline (the assertion above) long before.
        wait_for(beats, 15, f"six heartbeats\n{world.host_log()}", every=0.1)
        assert "heartbeat every 0.5s, as the relay asks" in world.host_log()
    finally:
        world.close()


@requires_tmux
def test_capacity_labels_and_load_reach_the_relay_and_placement_uses_them(
    world: HostWorld,
) -> None:
    world.start_host(extra=["--max-agents", "2", "--label", "zone=b", "--label", "gpu=none"])
    o = world.wait_online()
    assert o["maxAgents"] == 2
    assert o["labels"] == {"zone": "b", "gpu": "none"}

    status, body = world.api.call(
        "POST", "/api/agents/spawn", {"provider": "claude", "selector": {"zone": "c"}}
    )
    assert status == 409, body
    placed = world.api.ok(
        "POST", "/api/agents/spawn", {"provider": "claude", "selector": {"zone": "b"}}
    )
    assert placed["orchestratorId"] == world.oid
    cmd = world.api.settled(world.oid, placed["command"]["id"])
    assert cmd["status"] == "done", (cmd, world.host_log())

    # The heartbeat says how many agents run here.
    def load() -> dict[str, Any] | None:
        o = world.api.orchestrator(world.oid)
        return o if o and (o.get("load") or {}).get("activeAgents") == 1 else None

    o = wait_for(load, 15, f"load.activeAgents == 1\n{world.host_log()}")
    assert o["activeAgents"] == 1


@requires_tmux
def test_a_command_is_marked_running_before_the_host_starts_it(world: HostWorld) -> None:
    world.start_host()
    cid = world.api.spawn(world.oid, provider="codex", label="p")
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "done", (cmd, world.host_log())
    # startedAt comes from CommandStarted, which the relay records only on
    # the host's progress call; the provider starts after it.
    assert cmd.get("startedAt") is not None, cmd
    start = wait_for(lambda: next((s for s in world.starts() if s["commandId"] == cid), None),
                     10, "the provider to start")
    assert start["agentId"] == cmd["result"]["agentId"]


@requires_tmux
def test_a_command_past_its_deadline_is_never_started(slow_reaper_world: HostWorld) -> None:
    world = slow_reaper_world
    host = world.start_host()
    host.stop()
    data = world.api.ok(
        "POST", f"/api/orchestrators/{world.oid}/spawn",
        {"provider": "claude", "label": "late", "deadlineSeconds": 1},
    )
    cid = data["command"]["id"]
    deadline = world.api.commands(world.oid)[cid]["deadlineAt"]
    # Waiting for a deadline is waiting for the clock itself.
    wait_for(lambda: time.time() * 1000 > deadline + 50, 5, "the deadline to pass")
    assert world.api.commands(world.oid)[cid]["status"] == "pending"  # no reap has run

    world.start_host()
    wait_for(lambda: f"command {cid} is past its deadline" in world.host_log(), 20,
             f"the host to skip {cid}\n{world.host_log()}")
    assert world.api.commands(world.oid)[cid]["status"] == "pending"  # never marked running
    assert not [s for s in world.starts() if s["commandId"] == cid]
    assert world.tmux.sessions() == set()

    world.api.ok("POST", "/api/system/reap")
    cmd = world.api.commands(world.oid)[cid]
    assert cmd["status"] == "expired"
    assert cmd["expired"]["reason"] == "deadline passed"


@requires_tmux
def test_a_command_the_relay_already_ended_is_not_started(
    tmp_path: Path, tmux_socket: Tmux
) -> None:
    # The host hears of a command (pending, deadline far ahead) from its event
    # stream after the relay expired it for "orchestrator offline": only the
    # relay's 409 on progress tells it not to start.
    world = _world(tmp_path, tmux_socket, "--stale-after", "1.5", "--reap-every", "0.3")
    try:
        host = world.start_host()
        first = world.api.spawn(world.oid, provider="claude", label="first")
        assert world.api.settled(world.oid, first)["status"] == "done", world.host_log()
        wait_for(lambda: world.api.orchestrator(world.oid)["status"] == "online", 5, "online")
        host.kill9()  # its state file keeps the stream position from before
        data = world.api.ok(
            "POST", f"/api/orchestrators/{world.oid}/spawn", {"provider": "claude", "label": "gone"}
        )
        cid = data["command"]["id"]
        cmd = wait_for(
            lambda: (c := world.api.commands(world.oid)[cid])["status"] == "expired" and c,
            15, "the reaper to expire the command of the offline host",
        )
        assert cmd["expired"]["reason"] == "orchestrator offline"
        assert cmd["deadlineAt"] > time.time() * 1000

        world.start_host()
        wait_for(lambda: f"will not let command {cid} start" in world.host_log(), 20,
                 f"the host to hear of {cid} and be refused\n{world.host_log()}")
        assert not [s for s in world.starts() if s["commandId"] == cid]
        assert world.api.commands(world.oid)[cid]["status"] == "expired"
        assert all("gone" not in s for s in world.tmux.sessions())
    finally:
        world.close()
