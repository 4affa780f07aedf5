"""The host daemon end to end: a real relay, the real daemon, real tmux, real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from relay.host.state import ManagedAgent
from relay.host.tmux import Tmux, session_name
from tests.host.conftest import STUB, HostWorld, requires_tmux, wait_for

pytestmark = requires_tmux


def _spawned(world: HostWorld, command_id: str) -> dict:
    """Wait for a spawn to be done and its stub to be running; returns the stub's record."""
    cmd = world.api.settled(world.oid, command_id)
    assert cmd["status"] == "done", (cmd, world.host_log())
    agent_id = cmd["result"]["agentId"]
    return wait_for(
        lambda: next((s for s in world.starts() if s["commandId"] == command_id), None),
        20, f"the provider of {command_id} ({agent_id}) to start",
    )


def test_spawn_runs_the_provider_in_tmux_and_reports_it(world: HostWorld) -> None:
    world.start_host()
    orchestrator = world.wait_online()
    assert orchestrator["providers"] == ["claude", "codex"]
    assert orchestrator["envKeys"] == ["STUB_LOG", "STUB_SECRET"]
    assert "s3cr3t-value" not in repr(orchestrator)
    assert orchestrator["meta"]["dirs"] == ["other", "proj", "proj/sub"]

    prompt = "fix the bug; $(touch pwned) `id` && echo 'quoted' \"too\""
    cid = world.api.spawn(
        world.oid, provider="claude", cwd=str(world.base / "proj"), label="worker one",
        approvalMode="open", prompt=prompt,
    )
    record = _spawned(world, cid)
    agent_id = world.api.commands(world.oid)[cid]["result"]["agentId"]
    assert "following commands on the event stream" in world.host_log()

    # The prompt arrived as one untouched argument after the mode's own flags,
    # in the cwd, with the env file's values.
    assert record["argv"] == ["--permission-mode", "bypassPermissions", "--", prompt]
    assert record["parsed"]["prompt"] == prompt
    assert record["cwd"] == str((world.base / "proj").resolve())
    assert record["secret"] == "s3cr3t-value"
    assert record["approvalMode"] == "open"
    assert not list(world.base.rglob("pwned"))

    managed = wait_for(world.managed, 10, "the managed agent to be reported")
    assert len(managed) == 1
    agent = managed[0]
    assert agent["agentId"] == agent_id
    assert agent["provider"] == "claude"
    assert agent["label"] == "worker one"
    assert agent["approvalMode"] == "open"
    assert agent["pid"] == record["pid"]
    assert agent["tmuxSession"] in world.tmux.sessions()
    assert cid[:8] in agent["tmuxSession"]

    # The stub registered itself with the relay under the agent id it was given.
    wait_for(lambda: world.api.call("GET", f"/api/agents/{agent_id}")[0] == 200, 10,
             "the stub to register as an agent")


def test_restart_gives_a_new_pid_and_shutdown_ends_the_session(world: HostWorld) -> None:
    world.start_host()
    first = _spawned(world, world.api.spawn(world.oid, provider="codex", label="a"))
    second = _spawned(world, world.api.spawn(world.oid, provider="claude", label="b"))
    wait_for(lambda: len(world.managed()) == 2, 10, "two managed agents")

    cid = world.api.act(world.oid, "restart", first["agentId"])
    assert world.api.settled(world.oid, cid)["status"] == "done", world.host_log()
    restarted = wait_for(
        lambda: [s for s in world.starts() if s["agentId"] == first["agentId"]][1:], 20,
        "the restarted provider to start",
    )[0]
    assert restarted["pid"] != first["pid"]
    wait_for(
        lambda: {a["agentId"]: a.get("pid") for a in world.managed()}
        == {first["agentId"]: restarted["pid"], second["agentId"]: second["pid"]},
        10, "the new pid to be reported",
    )
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)

    cid = world.api.act(world.oid, "shutdown", second["agentId"])
    assert world.api.settled(world.oid, cid)["status"] == "done"
    wait_for(lambda: [a["agentId"] for a in world.managed()] == [first["agentId"]], 10,
             "one agent left")
    assert len(world.tmux.sessions()) == 1

    cid = world.api.act(world.oid, "shutdown")  # no agentId: all of them
    assert world.api.settled(world.oid, cid)["status"] == "done"
    wait_for(lambda: world.managed() == [], 10, "no agents left")
    assert world.tmux.sessions() == set()

    # The relay itself refuses actions on agents this host does not report.
    status, _ = world.api.call(
        "POST", f"/api/orchestrators/{world.oid}/actions",
        {"action": "restart", "agentId": "no-such-agent"},
    )
    assert status == 404


def test_an_agent_that_dies_is_noticed_and_reported(world: HostWorld) -> None:
    world.start_host()
    record = _spawned(world, world.api.spawn(world.oid, provider="claude"))
    wait_for(lambda: len(world.managed()) == 1, 10, "the agent to be reported")
    os.kill(record["pid"], signal.SIGKILL)
    # A failure, not a finished agent: it is restarted (issue 15, relay/host/crashloop.py)
    # and the report says how it last ended.
    agent = wait_for(
        lambda: next((m for m in world.managed() if m.get("restarts") == 1), None), 20,
        f"the killed agent to be restarted and reported\n{world.host_log()}",
    )
    assert agent["lastExit"]["signal"] == 9
    assert agent["pid"] != record["pid"]
    wait_for(lambda: len([s for s in world.starts() if s["agentId"] == record["agentId"]]) == 2,
             10, "the restarted provider to start")
    # The log says how it ended, and what it printed last.
    assert f"agent {record['agentId']} stopped: 'claude' ended with signal 9" in world.host_log()


def test_a_cwd_escaping_through_a_symlink_fails_and_starts_nothing(
    world: HostWorld, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (world.base / "escape").symlink_to(outside)
    world.start_host()
    cid = world.api.spawn(world.oid, provider="claude", cwd=str(world.base / "escape"))
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "failed"
    assert "outside the base dir" in cmd["result"]["error"]
    assert str(outside) in cmd["result"]["error"]
    assert world.starts() == []
    assert world.tmux.sessions() == set()
    assert world.managed() == []


def test_a_provider_not_configured_here_fails_with_the_reason(world: HostWorld) -> None:
    host = world.start_host(providers=("claude", "codex"))
    assert host.stop() == 0
    # Still online at the relay (its stale-after is long), so the spawn is queued...
    cid = world.api.spawn(world.oid, provider="codex")
    # ...for a daemon that now offers claude only; it reconciles at start.
    world.start_host(providers=("claude",))
    cmd = world.api.settled(world.oid, cid)
    assert cmd["status"] == "failed"
    assert "provider 'codex' is not configured on this host" in cmd["result"]["error"]
    assert world.starts() == []
    assert world.api.orchestrator(world.oid)["providers"] == ["claude"]


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_runs_no_command_twice(world: HostWorld) -> None:
    host = world.start_host()
    done = [world.api.spawn(world.oid, provider="claude", label=f"k{i}") for i in range(2)]
    for cid in done:
        _spawned(world, cid)
    host.kill9()

    queued = world.api.spawn(world.oid, provider="codex", label="while-down")
    world.start_host()
    _spawned(world, queued)
    # One more through the live stream: by the time it is done, anything the
    # restarted daemon would have replayed has been seen.
    _spawned(world, world.api.spawn(world.oid, provider="claude", label="after"))

    # The second daemon resumed the stream from the position the first one saved.
    assert re.search(r"event stream from position \d+", world.host_log()), world.host_log()
    counts = Counter(s["commandId"] for s in world.starts())
    assert all(n == 1 for n in counts.values()), counts
    assert len(counts) == 4
    assert len(world.tmux.sessions()) == 4
    wait_for(lambda: len(world.managed()) == 4, 10, "all four agents reported")
    assert all(c["status"] == "done" for c in world.api.commands(world.oid).values())


@pytest.mark.slow
def test_relay_restart_while_the_daemon_runs(fixed_port_world: HostWorld) -> None:
    world = fixed_port_world
    world.start_host()
    before = _spawned(world, world.api.spawn(world.oid, provider="claude", label="before"))
    url = world.relay.url

    assert world.relay.stop() == 0
    world.relay.start()
    assert world.relay.url == url

    after = _spawned(world, world.api.spawn(world.oid, provider="claude", label="after"))
    log = world.host_log()
    assert "lost the command stream" in log
    assert re.search(r"event stream from position \d+", log), log
    assert after["pid"] != before["pid"]
    wait_for(lambda: {a["agentId"] for a in world.managed()}
             == {before["agentId"], after["agentId"]}, 10, "both agents reported")
    world.wait_online()


@pytest.mark.slow
def test_a_relay_that_forgot_the_host_gets_it_back(world: HostWorld) -> None:
    world.start_host()
    record = _spawned(world, world.api.spawn(world.oid, provider="claude"))
    world.api.ok("DELETE", f"/api/orchestrators/{world.oid}")
    # The next heartbeat gets 404 (or the stream sees the removal): it registers
    # again and reports the agents it still runs.
    orchestrator = world.wait_online()
    wait_for(lambda: [a["agentId"] for a in world.managed()] == [record["agentId"]], 20,
             f"the agent to be reported again\n{world.host_log()}")
    assert orchestrator["hostname"] == f"{world.oid}.test"
    cid = world.api.spawn(world.oid, provider="codex")
    _spawned(world, cid)


def test_commands_interrupted_by_a_crash_are_settled_not_rerun(world: HostWorld) -> None:
    """The write-ahead mark: a command started before a crash is never run again.

    The state file is made to look as if the daemon died in the middle of two
    spawns: one before tmux started anything, one right after.
    """
    host = world.start_host()
    assert host.stop() == 0
    lost = world.api.spawn(world.oid, provider="claude", label="lost")
    made = world.api.spawn(world.oid, provider="claude", label="made")
    died = world.api.spawn(world.oid, provider="claude", label="died")
    commands = world.api.commands(world.oid)

    state = json.loads(world.state.read_text())
    state["startedCommands"] = {c: commands[c] for c in (lost, made, died)}
    # "died" was killed during its grace period: already in the agent list.
    died_session = session_name("died", "claude", died)
    state["agents"] = [asdict(ManagedAgent(
        died_session.removeprefix("relay-"), "claude", died_session, str(world.base),
        "guarded", 1, label="died", command_id=died,
    ))]
    world.state.write_text(json.dumps(state))
    session = session_name("made", "claude", made)
    agent_id = session.removeprefix("relay-")
    tmux = Tmux(world.tmux.socket)

    async def start_made() -> None:
        await tmux.start(
            session, world.base, [sys.executable, str(STUB)],
            {"RELAY_URL": world.relay.url, "RELAY_AGENT_ID": agent_id,
             "RELAY_COMMAND_ID": made, "STUB_LOG": str(world.stub_log)},
            world.root / "spec",
        )
        # One whose provider exited while the daemon was down: its pane stays.
        await tmux.start(
            died_session, world.base,
            [sys.executable, "-c", "print('bad credentials'); raise SystemExit(4)"],
            {}, world.root / "spec",
        )

    asyncio.run(start_made())
    wait_for(world.starts, 20, "the pre-made provider to start")
    wait_for(lambda: any(p.dead for p in asyncio.run(tmux.panes()).values()), 20,
             "the other pre-made provider to exit")

    world.start_host()
    failed = world.api.settled(world.oid, lost)
    assert failed["status"] == "failed"
    assert "not retried so that it never runs twice" in failed["result"]["error"]
    done = world.api.settled(world.oid, made)
    assert done["status"] == "done"
    assert done["result"]["agentId"] == agent_id
    wait_for(lambda: [a["agentId"] for a in world.managed()] == [agent_id], 10,
             "the adopted agent to be reported")
    assert [s["commandId"] for s in world.starts()] == [made]
    gone = world.api.settled(world.oid, died)
    assert gone["status"] == "failed"
    # tmux 3.3 sometimes marks a pane dead without recording its exit status (even
    # after the daemon's 2 s look-again); the daemon then says so rather than guess.
    assert any(
        w in gone["result"]["error"] for w in ("ended with status 4", "ended with an unknown status")
    ), gone
    assert "bad credentials" in gone["result"]["error"]
    assert world.tmux.sessions() == {session}


def test_with_an_admin_token_the_daemon_keeps_its_own(token_world: HostWorld) -> None:
    world = token_world
    world.start_host()
    record = _spawned(world, world.api.spawn(world.oid, provider="claude"))
    wait_for(lambda: len(world.managed()) == 1, 10, "the agent to be reported")
    assert record["secret"] == "s3cr3t-value"
    # Nothing of the daemon's own environment is inherited (ADR 0017).
    assert record["inherited"] is None
    assert record["relayToken"] is None
    assert record["term"]  # tmux's, so TUIs work
    state = json.loads(world.state.read_text())
    assert state["orchestratorToken"] and state["orchestratorToken"] != world.token
    assert world.token not in world.state.read_text()
    assert (world.state.stat().st_mode & 0o777) == 0o600
