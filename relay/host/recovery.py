"""Recovery after a daemon stop: settle commands it left half-done, never run them twice.

On start, each command still marked *started* in the state file is settled
from what tmux shows: a spawn whose session runs is ``done`` (and its agent
adopted), one whose pane died is ``failed`` with its exit status and last
lines, one with no session is ``failed``; any other kind is ``failed``,
because running it again could do its work twice.
"""

from __future__ import annotations

import logging
from typing import Any

from relay.host.agents import AgentRunner, clip
from relay.host.context import HostContext, now_ms
from relay.host.state import ManagedAgent
from relay.host.tmux import TmuxError, session_name

log = logging.getLogger("relay.host")


async def recover_started(ctx: HostContext, agents: AgentRunner) -> None:
    """Settle commands a killed daemon left half-done, without running them again."""
    for command_id, command in list(ctx.state.started.items()):
        if command.get("kind") == "spawn":
            result = await _recover_spawn(ctx, agents, command_id, command)
        else:
            result = {
                "status": "failed",
                "error": f"the host daemon stopped during this {command.get('kind')}; "
                "not retried so that it never runs twice",
            }
        log.warning("command %s was interrupted by a daemon stop: %s", command_id, result)
        ctx.state.finish(command_id, result)
        ctx.save()


async def _recover_spawn(
    ctx: HostContext, agents: AgentRunner, command_id: str, command: dict[str, Any]
) -> dict[str, Any]:
    provider = str(command.get("provider") or "")
    session = session_name(command.get("label") or None, provider, command_id)
    try:
        pane = (await ctx.tmux.panes()).get(session)
    except TmuxError:
        pane = None
    alive = pane is not None and not pane.dead
    agent = next((a for a in ctx.state.agents if a.tmux_session == session), None)
    # The worktree the spawn made before it started tmux, if any (agents.py notes it).
    made = command.get("hostWorktree") if isinstance(command.get("hostWorktree"), dict) else None
    if alive and agent is None:
        agent = ManagedAgent(
            agent_id=str(command.get("agentId") or session.removeprefix("relay-")),
            provider=provider,
            tmux_session=session,
            cwd=str((made or {}).get("cwd") or command.get("cwd") or ctx.config.base_dir),
            approval_mode=str(command.get("approvalMode") or "guarded"),
            started_at=now_ms(),
            label=command.get("label") or None,
            pid=await ctx.tmux.pane_pid(session),
            command_id=command_id,
            session_id=command.get("resume") or None,
        )
        if made is not None:
            agent.worktree, agent.branch = made.get("path"), made.get("branch")
            agent.worktree_repo = made.get("repo")
        ctx.state.agents.append(agent)
        ctx.agents_dirty = True
    if alive and agent is not None:
        return {"status": "done", "agentId": agent.agent_id}
    if pane is not None:
        why = await agents.exit_report(provider, session, pane)
        if agent is not None:
            agents.drop(agent)
        why += await agents.discard_worktree(command)
        return {"status": "failed", "error": clip(
            f"the provider exited right after its start: {why}"
        )}
    return {
        "status": "failed",
        "error": "the host daemon stopped while starting this agent; "
        "not retried so that it never runs twice" + await agents.discard_worktree(command),
    }
