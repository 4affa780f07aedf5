"""Crash loops end (issue 15): real tmux, a stub provider that exits at once, a real relay.

The daemon restarts an agent that fails, with doubling delays; after
``--restart-max`` restarts within ``--restart-window`` it stops and reports the
agent with ``crashloop: {exitStatus, signal, restarts, at}``. An operator's
restart starts it afresh; an exit with status 0 is a finished agent.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import pytest

from relay.host.crashloop import CrashLoopPolicy, ExitSeen
from relay.host.state import ManagedAgent
from tests.host.conftest import STUB, HostWorld, requires_tmux, wait_for


def _agent() -> ManagedAgent:
    return ManagedAgent("a1", "codex", "relay-a1-x", "/tmp", "guarded", 0)


# -- the policy, pure ---------------------------------------------------------------


def test_restarts_back_off_then_give_up_within_the_window() -> None:
    policy = CrashLoopPolicy(restart_max=3, restart_window=60)
    agent = _agent()
    at = 1_000_000
    delays = []
    for _ in range(3):
        assert policy.on_exit(agent, ExitSeen(3, None, at)) is True
        assert agent.restart_due is not None
        delays.append(agent.restart_due - at)
        assert not policy.due(agent, agent.restart_due - 1) and policy.due(agent, agent.restart_due)
        at = agent.restart_due
        policy.restarted(agent, at)
    assert delays == [1000, 2000, 4000]  # doubling
    assert policy.on_exit(agent, ExitSeen(3, None, at)) is False
    assert agent.crashloop == {"exitStatus": 3, "signal": None, "restarts": 3, "at": at}
    assert policy.waiting(agent) and not policy.due(agent, at + 10**9)
    assert policy.running([agent, _agent()]) == 1
    assert agent.to_wire()["crashloop"]["exitStatus"] == 3
    assert agent.to_wire()["restarts"] == 3


def test_restarts_older_than_the_window_do_not_count() -> None:
    policy = CrashLoopPolicy(restart_max=2, restart_window=10)
    agent = _agent()
    agent.restarts = [0, 1_000]
    # 20 s later both restarts left the window: it is restarted, not given up on.
    assert policy.on_exit(agent, ExitSeen(None, 9, 21_000)) is True
    assert agent.restarts == [] and agent.last_exit == {"status": None, "signal": 9, "at": 21_000}


def test_zero_restarts_allowed_gives_up_at_the_first_failure_and_exit_0_is_no_failure() -> None:
    assert CrashLoopPolicy(restart_max=0).on_exit(_agent(), ExitSeen(1, None, 5)) is False
    assert not ExitSeen(0, None, 5).failed
    assert ExitSeen(0, 15, 5).failed and ExitSeen(None, None, 5).failed


def test_the_record_keeps_the_last_known_status_when_tmux_has_none() -> None:
    policy = CrashLoopPolicy(restart_max=1)
    agent = _agent()
    assert policy.on_exit(agent, ExitSeen(3, None, 5)) is True
    policy.restarted(agent, 1005)
    assert policy.on_exit(agent, ExitSeen(None, None, 2000)) is False
    assert agent.crashloop is not None and agent.crashloop["exitStatus"] == 3
    assert agent.last_exit == {"status": None, "signal": None, "at": 2000}  # this exit: unknown


def test_a_restart_that_fails_to_start_keeps_how_the_program_last_ended() -> None:
    policy = CrashLoopPolicy(restart_max=3)
    agent = _agent()
    assert policy.on_exit(agent, ExitSeen(None, 9, 5)) is True  # SIGKILLed
    policy.restarted(agent, 1005)
    assert policy.start_failed(agent, 1010) is True  # counted, retried later
    assert agent.last_exit == {"status": None, "signal": 9, "at": 5}
    assert agent.restart_due is not None and len(agent.restarts) == 1
    fresh = _agent()  # nothing known yet: the failed start is what is known
    policy.start_failed(fresh, 7)
    assert fresh.last_exit == {"status": None, "signal": None, "at": 7}


def test_an_operators_restart_clears_the_record() -> None:
    policy = CrashLoopPolicy(restart_max=0)
    agent = _agent()
    policy.on_exit(agent, ExitSeen(2, None, 5))
    policy.reset(agent)
    assert agent.crashloop is None and agent.restarts == [] and not policy.waiting(agent)
    assert "crashloop" not in agent.to_wire()


# -- end to end ---------------------------------------------------------------------


def _crashy_host(world: HostWorld, *extra: str) -> None:
    crashing = shlex.join([sys.executable, str(STUB), "--exit-status", "3"])
    world.start_host(
        providers=("claude",),
        extra=["--provider", f"codex={crashing}", "--start-grace", "0", *extra],
    )


def _crashloop(world: HostWorld) -> dict[str, Any] | None:
    return next((m for m in world.managed() if m.get("crashloop")), None)


@requires_tmux
def test_an_agent_that_exits_at_once_is_restarted_then_reported_crash_looping(
    world: HostWorld,
) -> None:
    _crashy_host(world, "--restart-max", "2", "--restart-window", "120")
    cid = world.api.spawn(world.oid, provider="codex", label="crashy")
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "done", (cmd, world.host_log())

    agent = wait_for(lambda: _crashloop(world), 30, f"a crashloop report\n{world.host_log()}")
    assert agent["crashloop"]["exitStatus"] == 3, (agent, world.host_log())
    assert agent["crashloop"]["signal"] is None
    assert agent["crashloop"]["restarts"] == 2
    assert agent["restarts"] == 2
    assert agent["lastExit"]["status"] in (3, None)  # None: tmux did not learn it (see crashloop.py)
    assert agent["state"] == "running"  # its host is online; crashloop says the rest
    # The first start and two restarts: three runs, with growing gaps.
    runs = [s for s in world.starts() if s["commandId"] == cid]
    assert len(runs) == 3, runs
    assert "is crash-looping" in world.host_log()
    assert world.tmux.sessions() == set()

    # A crash-looping agent does not count against capacity.
    wait_for(lambda: (world.api.orchestrator(world.oid) or {}).get("activeAgents") == 0, 10,
             "activeAgents 0")
    # It stays given up on: another command goes through, and still three runs.
    other = world.api.spawn(world.oid, provider="claude", label="healthy")
    assert world.api.settled(world.oid, other)["status"] == "done"
    wait_for(lambda: any(s["commandId"] == other for s in world.starts()), 10, "healthy start")
    assert len([s for s in world.starts() if s["commandId"] == cid]) == 3

    # An operator's restart starts it afresh (and it crashes again: one more run).
    restart = world.api.act(world.oid, "restart", agent["agentId"])
    assert world.api.settled(world.oid, restart)["status"] == "done", world.host_log()
    wait_for(lambda: len([s for s in world.starts() if s["commandId"] == cid]) >= 4, 20,
             "the operator's restart to run it again")


@requires_tmux
def test_the_dashboard_contract_shows_crashloop_in_the_fleet_listing(world: HostWorld) -> None:
    _crashy_host(world, "--restart-max", "0")
    cid = world.api.spawn(world.oid, provider="codex", label="once")
    assert world.api.settled(world.oid, cid)["status"] == "done"
    wait_for(lambda: _crashloop(world), 20, f"a crashloop report\n{world.host_log()}")
    listed = world.api.ok("GET", "/api/managed-agents")
    assert [m["crashloop"]["restarts"] for m in listed if m.get("crashloop")] == [0]
    # Never restarted: --restart-max 0.
    assert len([s for s in world.starts() if s["commandId"] == cid]) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"crashloop": {"exitStatus": 3, "at": 1}},  # restarts missing
        {"crashloop": {"exitStatus": 300, "restarts": 1, "at": 1}},
        {"lastExit": {"status": 1}},  # at missing
        {"restarts": -1},
        {"crashloop": "yes"},
    ],
)
def test_a_bad_crash_report_is_400_naming_the_field(world: HostWorld, bad: dict[str, Any]) -> None:
    world.api.ok("POST", "/api/orchestrators", {
        "id": world.oid, "hostname": "h", "providers": ["codex"], "baseDir": "/tmp",
    })
    status, body = world.api.call("PATCH", f"/api/orchestrators/{world.oid}/agents", {
        "agents": [{"agentId": "a1", "provider": "codex", **bad}],
    })
    assert status == 400, body
    assert "agents[0]." in body["error"]


@requires_tmux
def test_a_crash_loop_survives_a_daemon_kill(world: HostWorld) -> None:
    _crashy_host(world, "--restart-max", "0")
    cid = world.api.spawn(world.oid, provider="codex", label="kept")
    assert world.api.settled(world.oid, cid)["status"] == "done"
    before = wait_for(lambda: _crashloop(world), 20, f"a crashloop report\n{world.host_log()}")
    world.hosts[-1].kill9()
    # The state file keeps the record: the new daemon neither forgets it nor restarts it.
    _crashy_host(world, "--restart-max", "0")
    other = world.api.spawn(world.oid, provider="claude", label="after")
    assert world.api.settled(world.oid, other)["status"] == "done"
    wait_for(lambda: any(s["commandId"] == other for s in world.starts()), 10, "the new start")
    kept = _crashloop(world)
    assert kept is not None and kept["crashloop"] == before["crashloop"], world.managed()
    assert len([s for s in world.starts() if s["commandId"] == cid]) == 1
