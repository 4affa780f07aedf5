"""Worktrees and resumed sessions end to end: relay, daemon, tmux, git (ADR 0034).

The stub provider records its argv, its cwd and ``git branch --show-current``
there, so these tests see what a provider would: where it runs, on which
branch, with which arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from relay.host import worktree as wt
from tests.host.conftest import HostWorld, requires_tmux, wait_for
from tests.host.gitrepo import ENV, git, make_repo

pytestmark = requires_tmux


def _started(world: HostWorld, command_id: str) -> dict[str, Any]:
    """Wait for a spawn to be done and its stub to have started; returns the stub's record."""
    cmd = world.api.settled(world.oid, command_id)
    assert cmd["status"] == "done", (cmd, world.host_log())
    return wait_for(
        lambda: next((s for s in world.starts() if s["commandId"] == command_id), None),
        20, f"the provider of {command_id} to start",
    )


def _failed(world: HostWorld, command_id: str, *words: str) -> str:
    cmd = world.api.settled(world.oid, command_id)
    assert cmd["status"] == "failed", (cmd, world.host_log())
    error = cmd["result"]["error"]
    for word in words:
        assert word in error, (word, error)
    return str(error)


def _managed(world: HostWorld, agent_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: next((a for a in world.managed() if a["agentId"] == agent_id), None),
        10, f"{agent_id} in the managed-agent report",
    )


def test_an_agent_works_in_its_worktree_and_shutdown_removes_it_only_when_clean(
    world: HostWorld,
) -> None:
    repo = make_repo(world.base / "repo")
    world.start_host()
    root = Path(os.path.realpath(world.base)) / ".relay" / "worktrees"

    # Spawned from a subfolder: the agent works in the same subfolder of its worktree.
    one = _started(world, world.api.spawn(
        world.oid, provider="claude", cwd=str(repo / "sub"), worktree={}, prompt="go",
    ))
    aid = one["agentId"]
    assert one["cwd"] == str(root / aid / "sub")
    assert one["branch"] == f"relay/{aid}"
    shown = _managed(world, aid)
    assert shown["worktree"] == str(world.base / ".relay" / "worktrees" / aid)
    assert shown["branch"] == f"relay/{aid}"
    assert shown["cwd"] == str(world.base / ".relay" / "worktrees" / aid / "sub")

    two = _started(world, world.api.spawn(
        world.oid, provider="codex", cwd=str(repo), worktree={"branch": "feature/two"},
    ))
    assert two["cwd"] == str(root / two["agentId"]) and two["branch"] == "feature/two"
    assert "feature/two" in git(repo, "worktree", "list", "--porcelain")

    # The first one commits its work (clean); the second leaves a file behind (dirty).
    work = root / aid
    (work / "result.txt").write_text("done\n")
    git(work, "add", "result.txt")
    git(work, "commit", "-q", "-m", "the agent's work")
    (root / two["agentId"] / "notes.txt").write_text("half done\n")

    cid = world.api.ok("POST", f"/api/orchestrators/{world.oid}/actions", {
        "action": "shutdown", "agentId": aid, "removeWorktree": True,
    })["command"]["id"]
    assert world.api.settled(world.oid, cid)["status"] == "done", world.host_log()
    assert not work.exists()
    assert git(repo, "log", "--format=%s", f"relay/{aid}").splitlines()[0] == "the agent's work"

    cid = world.api.ok("POST", f"/api/orchestrators/{world.oid}/actions", {
        "action": "shutdown", "agentId": two["agentId"], "removeWorktree": True,
    })["command"]["id"]
    error = _failed(world, cid, f"agent {two['agentId']!r} was stopped", "was kept",
                    "uncommitted or untracked changes", "?? notes.txt")
    assert (root / two["agentId"] / "notes.txt").read_text() == "half done\n", error
    wait_for(lambda: world.managed() == [], 10, "no agents left")
    assert world.tmux.sessions() == set()


def test_worktree_spawns_that_git_refuses_fail_with_the_reason(world: HostWorld) -> None:
    repo = make_repo(world.base / "repo")
    world.start_host()
    # The repository's own branch is checked out already.
    _failed(world, world.api.spawn(world.oid, provider="claude", cwd=str(repo),
                                   worktree={"branch": "main"}),
            "no worktree, so nothing was started", "branch 'main' is already checked out at")
    # A folder that is not in a repository.
    _failed(world, world.api.spawn(world.oid, provider="claude", cwd=str(world.base / "other"),
                                   worktree={}),
            "not in a git repository inside the base dir")
    # The relay refuses a name git would not take, before any host sees it.
    status, body = world.api.call("POST", f"/api/orchestrators/{world.oid}/spawn",
                                  {"provider": "claude", "worktree": {"branch": "bad..name"}})
    assert status == 400 and "worktree.branch" in body["error"], body
    assert world.starts() == [] and world.tmux.sessions() == set()
    assert not (world.base / ".relay" / "worktrees").exists() or not any(
        (world.base / ".relay" / "worktrees").iterdir()
    )


def test_resume_passes_the_session_the_providers_way(world: HostWorld) -> None:
    sid = "4f1c2b9e-3a57-4d0e-9d7a-2b1f0c8e6a11"
    world.start_host(extra=["--resume-args", "codex=exec resume --session={session}"])
    claude = _started(world, world.api.spawn(world.oid, provider="claude", resume=sid,
                                             prompt="--continue where you were"))
    assert claude["argv"] == ["--resume", sid, "--permission-mode", "default",
                              "--", "--continue where you were"]
    assert claude["parsed"]["resume"] == sid
    codex = _started(world, world.api.spawn(world.oid, provider="codex", resume="s-2",
                                            approvalMode="read-only"))
    assert codex["argv"] == ["exec", "resume", "--session=s-2", "--sandbox", "read-only",
                             "--ask-for-approval", "never"]
    assert _managed(world, claude["agentId"])["sessionId"] == sid
    assert _managed(world, codex["agentId"])["sessionId"] == "s-2"

    # A restart resumes the same session (without the first prompt).
    cid = world.api.act(world.oid, "restart", claude["agentId"])
    assert world.api.settled(world.oid, cid)["status"] == "done", world.host_log()
    again = wait_for(lambda: [s for s in world.starts() if s["agentId"] == claude["agentId"]][1:],
                     20, "the restarted provider")[0]
    assert again["argv"] == ["--resume", sid, "--permission-mode", "default"]


def test_a_spawn_cut_short_by_a_crash_undoes_its_worktree(world: HostWorld) -> None:
    """The daemon died after making the worktree, before tmux started the agent: on
    start it settles the spawn failed and removes the unused worktree and its branch."""
    repo = make_repo(world.base / "repo")
    host = world.start_host()
    assert host.stop() == 0
    cid = world.api.spawn(world.oid, provider="claude", cwd=str(repo), worktree={})
    command = world.api.commands(world.oid)[cid]
    base = Path(os.path.realpath(world.base))
    made = asyncio.run(wt.create(wt.Git(ENV, base), Path(os.path.realpath(repo)), "lost-1", None))
    command["hostWorktree"] = {"path": str(made.path), "branch": made.branch,
                               "repo": str(made.repo), "cwd": str(made.cwd), "createdBranch": True}
    state = json.loads(world.state.read_text())
    state["startedCommands"] = {cid: command}
    world.state.write_text(json.dumps(state))

    world.start_host()
    _failed(world, cid, "not retried so that it never runs twice",
            "its worktree and branch 'relay/lost-1' were removed")
    assert not made.path.exists()
    assert git(repo, "branch", "--list", "relay/lost-1") == ""
