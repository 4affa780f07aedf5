"""The agents in tmux: start, restart and stop a provider, and tell how one ended.

Everything here acts on one managed agent at a time and keeps the state
file in step; deciding *which* command to carry out, and when, is
``commands.py``'s business, and noticing agents that ended is ``watcher.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from relay.domain.errors import InvalidInputError
from relay.domain.rules import check_branch, check_session_id
from relay.host import worktree as wt
from relay.host.config import APPROVAL_MODES, HostConfigError, resolve_inside
from relay.host.context import HostContext, now_ms
from relay.host.notice import printable
from relay.host.state import ManagedAgent
from relay.host.tmux import PaneState, TmuxError, session_name

log = logging.getLogger("relay.host")

MAX_RESULT_ERROR = 3900  # the relay takes at most 4000 characters of ``error``
LAST_LINES = 20


class CommandFailedError(Exception):
    """Raised while carrying out a command; the message is the reported reason."""


class AgentRunner:
    """Starts, restarts and stops providers in tmux for one host."""

    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self._git: wt.Git | None = None

    @property
    def git(self) -> wt.Git:
        """git for worktrees, with the agents' clean environment (ADR 0017, 0034)."""
        if self._git is None:
            self._git = wt.Git(self.ctx.config.agent_base_env, self.base_real)
        return self._git

    def argv(
        self, provider: str, mode: str, prompt: str | None, resume: str | None = None
    ) -> list[str]:
        """The provider's argv for ``mode``, the prompt last and never an option.

        The approval flags are the provider's own (ADR 0016). The prompt goes
        after ``--``, so ``--dangerously-skip-permissions`` as a prompt is a
        prompt, never a flag. A session to resume comes first, in the
        provider's own words (ADR 0034): ``codex resume <id>`` is a subcommand,
        which must precede its options.
        """
        config = self.ctx.config.providers.get(provider)
        if config is None:
            configured = ", ".join(sorted(self.ctx.config.providers))
            raise CommandFailedError(
                f"provider {provider!r} is not configured on this host (configured: {configured})"
            )
        try:
            flags = config.mode_flags(provider, mode)
            resuming = () if resume is None else config.resume_args(provider, resume)
        except HostConfigError as exc:
            raise CommandFailedError(str(exc)) from exc
        argv = [*config.argv, *resuming, *flags]
        if shutil.which(argv[0], path=self.ctx.config.agent_base_env.get("PATH")) is None:
            raise CommandFailedError(f"provider {provider!r}: command {argv[0]!r} not found")
        if prompt:
            argv += ["--", prompt]  # one argv element, after the end of options
        return argv

    def env(self, agent: ManagedAgent, command_id: str) -> dict[str, str]:
        """The agent's environment: the clean base, the provider's and ours (ADR 0017)."""
        config = self.ctx.config
        env = dict(config.agent_base_env)
        env.update(config.provider_env.get(agent.provider, {}))
        env.update(config.env)
        env.update({
            "RELAY_URL": config.relay_url,
            "RELAY_AGENT_ID": agent.agent_id,
            "RELAY_ORCHESTRATOR_ID": config.orchestrator_id,
            "RELAY_APPROVAL_MODE": agent.approval_mode,
            "RELAY_COMMAND_ID": command_id,
            "RELAY_TMUX_SESSION": agent.tmux_session,
            # ``relay host notify`` (a provider's hook) drops reports here (ADR 0032).
            "RELAY_NOTIFY_DIR": str(self.ctx.notify_dir),
        })
        if agent.label:
            env["RELAY_AGENT_LABEL"] = agent.label
        return env

    @property
    def spec_dir(self) -> Path:
        """Where launch specs go: beside the state file, private to the daemon."""
        return self.ctx.state_file.path.parent / "launch"

    @property
    def base_real(self) -> Path:
        """The base dir with every symlink resolved: the confinement's root."""
        return Path(os.path.realpath(self.ctx.config.base_dir))

    async def spawn(self, command: dict[str, Any]) -> ManagedAgent:
        """Start the provider a spawn command asks for and add it to the managed agents."""
        ctx = self.ctx
        command_id = str(command["id"])
        provider = str(command.get("provider") or "")
        prompt = command.get("prompt") or None
        approval = command.get("approvalMode") or "guarded"
        if approval not in APPROVAL_MODES:
            raise CommandFailedError(f"unknown approvalMode {approval!r}")
        resume, branch, wants_worktree = _worktree_and_resume(command)
        argv = self.argv(provider, approval, prompt, resume)
        try:
            cwd = resolve_inside(ctx.config.base_dir, command.get("cwd"))
        except HostConfigError as exc:
            raise CommandFailedError(str(exc)) from exc
        label = command.get("label") or None
        session = session_name(label, provider, command_id)
        agent = ManagedAgent(
            agent_id=str(command.get("agentId") or session.removeprefix("relay-")),
            provider=provider,
            tmux_session=session,
            cwd=str(cwd),
            approval_mode=approval,
            started_at=now_ms(),
            label=label,
            command_id=command_id,
            session_id=resume,
        )
        if ctx.state.agent(agent.agent_id) is not None:
            raise CommandFailedError(f"a managed agent {agent.agent_id!r} already runs here")
        made: wt.Worktree | None = None
        if wants_worktree:
            made = await self._make_worktree(command_id, cwd, agent.agent_id, branch)
            cwd = made.cwd
            agent.cwd, agent.worktree, agent.branch = str(cwd), str(made.path), made.branch
            agent.worktree_repo = str(made.repo)
        try:
            agent.pid = await ctx.tmux.start(
                session, cwd, argv, self.env(agent, command_id), self.spec_dir,
                base=self.base_real,
            )
        except TmuxError as exc:
            note = "" if made is None else f"; {await wt.discard(self.git, made)}"
            raise CommandFailedError(f"{exc}{note}") from exc
        ctx.state.agents.append(agent)
        ctx.agents_dirty = True
        ctx.save()
        log.info("started %s (%s) in tmux session %s, pid %s, cwd %s",
                 agent.agent_id, provider, session, agent.pid, cwd)
        return agent

    async def _make_worktree(
        self, command_id: str, cwd: Path, agent_id: str, branch: str | None
    ) -> wt.Worktree:
        """Make the spawn's worktree and note it on the started command, so a daemon
        killed before the agent starts still knows where it is (recovery.py)."""
        try:
            made = await wt.create(self.git, cwd, agent_id, branch)
        except wt.WorktreeError as exc:
            raise CommandFailedError(f"no worktree, so nothing was started: {exc}") from exc
        started = self.ctx.state.started.get(command_id)
        if started is not None:
            started["hostWorktree"] = {
                "path": str(made.path), "branch": made.branch, "repo": str(made.repo),
                "cwd": str(made.cwd), "createdBranch": made.created_branch,
            }
            self.ctx.save()
        log.info("made worktree %s on branch %s (of %s) for %s",
                 made.path, made.branch, made.repo, agent_id)
        return made

    async def discard_worktree(self, command: dict[str, Any]) -> str:
        """Undo the worktree a spawn made when its agent did not start (or ended at once);
        a note for the spawn's failure reason, '' when it made none."""
        made = command.get("hostWorktree")
        if not isinstance(made, dict):
            return ""
        note = await wt.discard(self.git, wt.Worktree(
            path=Path(made["path"]), branch=str(made["branch"]), repo=Path(made["repo"]),
            cwd=Path(made["cwd"]), created_branch=bool(made.get("createdBranch")),
        ))
        return f"; {note}"

    async def restart(self, agent: ManagedAgent) -> None:
        """Run the provider again in the agent's session, without its first prompt.

        An agent with a session id resumes that session (ADR 0034): a restart
        that forgot the conversation it was asked to continue would surprise.
        """
        # The first run may have done the prompt's work already.
        ctx = self.ctx
        argv = self.argv(agent.provider, agent.approval_mode, None, agent.session_id)
        await ctx.tmux.kill(agent.tmux_session)
        try:
            cwd = resolve_inside(ctx.config.base_dir, agent.cwd)
        except HostConfigError as exc:
            raise CommandFailedError(str(exc)) from exc
        try:
            agent.pid = await ctx.tmux.start(
                agent.tmux_session, cwd, argv,
                self.env(agent, agent.command_id or ""), self.spec_dir,
                base=self.base_real,
            )
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        agent.started_at = now_ms()
        ctx.agents_dirty = True
        ctx.save()
        log.info("restarted %s in tmux session %s, pid %s",
                 agent.agent_id, agent.tmux_session, agent.pid)

    async def shutdown(self, agent: ManagedAgent, remove_worktree: bool = False) -> str | None:
        """Kill the agent's session and forget it; then remove its worktree if asked and clean.

        The agent is stopped whatever its worktree holds: a shutdown is how an
        operator stops an agent, and must not depend on its files (ADR 0034).
        Returns why a worktree was kept, or None.
        """
        ctx = self.ctx
        try:
            await ctx.tmux.kill(agent.tmux_session)
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        ctx.state.agents = [a for a in ctx.state.agents if a.agent_id != agent.agent_id]
        ctx.agents_dirty = True
        ctx.save()
        log.info("shut down %s (tmux session %s)", agent.agent_id, agent.tmux_session)
        if not remove_worktree or not agent.worktree:
            return None
        path = Path(agent.worktree)
        try:
            kept = await wt.remove(self.git, path, Path(agent.worktree_repo or path))
        except wt.WorktreeError as exc:
            kept = str(exc)
        if kept is None:
            log.info("removed worktree %s of %s (branch %s kept)", path, agent.agent_id, agent.branch)
            return None
        log.warning("kept worktree %s of %s: %s", path, agent.agent_id, kept)
        return f"agent {agent.agent_id!r} was stopped, but its worktree {str(path)!r} was kept: {kept}"

    async def type_into(self, agent: ManagedAgent, text: str, enter: bool) -> None:
        """Type an operator's answer into the agent's terminal (ADR 0033); it must be running."""
        ctx = self.ctx
        try:
            pane = (await ctx.tmux.panes()).get(agent.tmux_session)
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        if pane is None or pane.dead:
            raise CommandFailedError(
                f"agent {agent.agent_id!r} is not running (its tmux session "
                f"{agent.tmux_session} has {'ended' if pane is not None else 'gone'}); "
                "nothing was typed"
            )
        try:
            await ctx.tmux.send_text(agent.tmux_session, text, enter)
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        log.info("typed %d character(s)%s into %s", len(text), " and Enter" if enter else "",
                 agent.agent_id)

    def drop(self, agent: ManagedAgent) -> None:
        """Forget an agent that is gone (its session ended)."""
        ctx = self.ctx
        before = len(ctx.state.agents)
        ctx.state.agents = [a for a in ctx.state.agents if a.agent_id != agent.agent_id]
        if len(ctx.state.agents) != before:
            ctx.agents_dirty = True
            ctx.save()

    def targets(self, agent_id: str | None) -> list[ManagedAgent]:
        """The agent a command names, or every managed agent when it names none."""
        if not agent_id:
            return list(self.ctx.state.agents)
        agent = self.ctx.state.agent(agent_id)
        if agent is None:
            raise CommandFailedError(f"no managed agent {agent_id!r} runs on this host")
        return [agent]

    async def exit_report(self, provider: str, session: str, pane: PaneState | None) -> str:
        """The exit status and last lines of a dead pane; closes its session."""
        tmux = self.ctx.tmux
        pane = await self.with_exit_status(session, pane)
        lines = await tmux.last_lines(session, LAST_LINES) if pane is not None else []
        with contextlib.suppress(TmuxError):
            await tmux.kill(session)
        if pane is not None and pane.status is not None:
            status = f"status {pane.status}"
        elif pane is not None and pane.signal is not None:
            status = f"signal {pane.signal}"
        else:
            status = "an unknown status"
        text = "\n".join(printable(line) for line in lines) or "(it printed nothing)"
        return f"{provider!r} ended with {status}; its last lines:\n{text}"

    async def with_exit_status(self, session: str, pane: PaneState | None) -> PaneState | None:
        """tmux (3.3) may mark a pane dead a moment before it records the exit status:
        look again for up to ~2 s rather than report "an unknown status"."""
        for _ in range(20):
            if pane is None or not pane.dead or pane.status is not None or pane.signal is not None:
                return pane
            await asyncio.sleep(0.1)
            try:
                pane = (await self.ctx.tmux.panes()).get(session) or pane
            except TmuxError:
                return pane
        return pane


def _worktree_and_resume(command: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """A spawn's ``resume``, ``worktree.branch`` and whether it wants a worktree, checked
    again here: the relay checked them, but the host is the one that runs them."""
    try:
        resume = command.get("resume")
        if resume is not None:
            resume = check_session_id("resume", resume)
        worktree = command.get("worktree")
        if worktree is None:
            return resume, None, False
        if not isinstance(worktree, dict):
            raise InvalidInputError("worktree", "must be an object {branch?}")
        branch = worktree.get("branch")
        if branch is not None:
            branch = check_branch("worktree.branch", branch)
        return resume, branch, True
    except InvalidInputError as exc:
        raise CommandFailedError(exc.message) from exc


def clip(text: str) -> str:
    """Keep the end (the last lines say most) within what the relay accepts."""
    if len(text) <= MAX_RESULT_ERROR:
        return text
    head = text.split("\n", 1)[0][:400]
    tail = text[-(MAX_RESULT_ERROR - len(head) - 8):]
    return f"{head}\n…\n{tail}"
