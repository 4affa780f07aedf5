"""Carrying out commands: at most once, never past their deadline, results never lost.

A command is marked *started* in the state file before anything is done,
and *handled* (with its result queued in an outbox) right after. A daemon
that was killed in between does not run the command again
(``recovery.py`` settles it). Results are posted from the outbox until the
relay accepts them (a 409 means it already has one), so a network loss
never loses or repeats a result.

A spawn is settled only after ``start_grace``: a provider that exits in that
time (a missing key, a bad flag, a refused cwd) makes the spawn ``failed``
with its exit status and the last lines it printed, instead of a ``done``
for an agent that is already gone. The wait runs beside the other commands,
not under the command lock.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from relay.host.agents import AgentRunner, CommandFailedError, clip
from relay.host.attention import AttentionWatcher
from relay.host.client import RelayClientError, RelayRejectedError
from relay.host.context import HostContext, now_ms
from relay.host.lifecycle import deadline_passed
from relay.host.registration import Registration
from relay.host.state import ManagedAgent
from relay.host.tmux import PaneState, TmuxError
from relay.host.watcher import AgentWatcher

log = logging.getLogger("relay.host")


class CommandRunner:
    """Carries out the relay's commands for this host and posts their results."""

    def __init__(
        self,
        ctx: HostContext,
        registration: Registration,
        agents: AgentRunner,
        watcher: AgentWatcher,
        attention: AttentionWatcher | None = None,
    ) -> None:
        self.ctx = ctx
        self.registration = registration
        self.agents = agents
        self.watcher = watcher
        self.attention = attention
        self.settling: set[asyncio.Task[None]] = set()
        # One flush at a time: two (a command's and the heartbeat's) would both post the
        # results queued when they began, and a result would go out twice. A flush asked
        # for meanwhile (also from inside one: a re-registration flushes) runs after it.
        self._flushing = False
        self._again = False

    async def reconcile(self) -> None:
        """Carry out every pending command the relay lists that we have not handled."""
        commands = await self.registration.call(self.ctx.client.pending_commands)
        for command in commands:
            await self.handle(command)
        await self.flush_outbox()

    async def handle(self, command: dict[str, Any]) -> None:
        """Carry out one command at most once, then queue and post its result."""
        ctx = self.ctx
        command_id = str(command.get("id") or "")
        if not command_id or command.get("status", "pending") != "pending":
            return
        async with ctx.lock:
            if ctx.state.is_handled(command_id):
                return
            if not await self._may_start(command):
                return
            ctx.state.mark_started(command)
            ctx.save()
            kind = command.get("kind")
            log.info("command %s: %s %s", command_id, kind, describe(command))
            result: dict[str, Any] | None
            try:
                result = await self._execute(command)
            except CommandFailedError as exc:
                result = {"status": "failed", "error": str(exc)}
            except Exception as exc:
                log.exception("command %s crashed", command_id)
                result = {"status": "failed", "error": f"the host daemon hit an error: {exc}"}
            if result is not None:
                self.finish(command_id, result)
        if ctx.agents_dirty:
            await self.watcher.report()
        await self.flush_outbox()

    async def _may_start(self, command: dict[str, Any]) -> bool:
        """Never start a command past its deadline, nor before the relay marked it running.

        A command the relay will expire (or already did) is marked handled with
        no result: a result would only be refused (409). When the relay cannot
        be reached the command stays unhandled, so the next reconcile tries again.
        """
        ctx = self.ctx
        command_id = str(command["id"])
        if deadline_passed(command, now_ms()):
            log.warning("command %s is past its deadline (%s); not starting it, the relay "
                        "expires it", command_id, command.get("deadlineAt"))
            ctx.state.skip(command_id)
            ctx.save()
            return False
        if "deadlineAt" not in command:
            return True  # an older relay: no deadlines, no progress route
        try:
            await self.registration.call(lambda: ctx.client.start_command(command_id))
        except RelayRejectedError as exc:
            log.warning("the relay will not let command %s start (%s); not starting it",
                        command_id, exc)
            ctx.state.skip(command_id)
            ctx.save()
            return False
        except RelayClientError as exc:
            log.warning("cannot mark command %s running yet (%s); it waits for the next "
                        "reconcile", command_id, exc)
            return False
        return True

    def finish(self, command_id: str, result: dict[str, Any]) -> None:
        """Mark a command handled with its result queued (call under the lock)."""
        if result["status"] == "failed":
            log.warning("command %s failed: %s", command_id, result["error"])
        else:
            log.info("command %s done", command_id)
        self.ctx.state.finish(command_id, result)
        self.ctx.save()

    async def flush_outbox(self) -> None:
        """Post queued results; keep the ones the relay could not take yet."""
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            while True:
                self._again = False
                await self._flush_outbox()
                if not self._again:
                    return
        finally:
            self._flushing = False

    async def _flush_outbox(self) -> None:
        ctx = self.ctx
        for command_id, result in list(ctx.state.outbox.items()):
            try:
                await self.registration.call(
                    lambda c=command_id, r=result: ctx.client.post_result(c, r)
                )
            except RelayRejectedError as exc:
                log.error("the relay refused the result of %s (%s); dropping it", command_id, exc)
            except RelayClientError as exc:
                log.warning("could not post the result of %s yet: %s", command_id, exc)
                return
            ctx.state.outbox.pop(command_id, None)
            ctx.save()

    async def _execute(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Carry out a command; ``None`` when its result comes later (a spawn's grace)."""
        kind = command.get("kind")
        if kind == "spawn":
            agent = await self.agents.spawn(command)
            if self.ctx.config.start_grace <= 0:
                return {"status": "done", "agentId": agent.agent_id}
            self.watcher.in_grace.add(agent.tmux_session)
            task = asyncio.create_task(self._settle_spawn(str(command["id"]), agent))
            self.settling.add(task)
            task.add_done_callback(self.settling.discard)
            return None
        if kind in ("restart", "shutdown"):
            agent_id = command.get("agentId")
            remove_worktree = kind == "shutdown" and command.get("removeWorktree") is True
            kept: list[str] = []
            for agent in self.agents.targets(agent_id):
                if kind == "restart":
                    self.ctx.crash.reset(agent)  # an operator's restart starts the count afresh
                    await self.agents.restart(agent)
                else:
                    why = await self.agents.shutdown(agent, remove_worktree)
                    if why is not None:
                        kept.append(why)
            result: dict[str, Any] = {"status": "done"}
            if kept:
                # Stopped as asked, but the removal it also asked for did not happen:
                # a failure to look at, naming what is left (ADR 0034).
                result = {"status": "failed", "error": clip("; ".join(kept))}
            if agent_id:
                result["agentId"] = agent_id
            return result
        if kind == "input":
            return await self._input(command)
        raise CommandFailedError(f"unknown command kind {kind!r}")

    async def _input(self, command: dict[str, Any]) -> dict[str, Any]:
        """Type the operator's text into one agent (ADR 0033), literally, then Enter."""
        agent_id = command.get("agentId")
        text = command.get("text")
        if not agent_id or not isinstance(text, str):
            raise CommandFailedError("an input command needs an agentId and a text")
        try:
            agent = self.agents.targets(str(agent_id))[0]
        except CommandFailedError as exc:
            # Gone already (the watcher saw its session end first): say so the same way.
            raise CommandFailedError(f"{exc}; nothing was typed") from exc
        await self.agents.type_into(agent, text, command.get("enter") is not False)
        if self.attention is not None:
            self.attention.answered(agent.agent_id)
        return {"status": "done", "agentId": agent.agent_id}

    async def _settle_spawn(self, command_id: str, agent: ManagedAgent) -> None:
        """After the grace period, report the spawn ``done``, or ``failed`` if it exited."""
        try:
            await asyncio.sleep(self.ctx.config.start_grace)
            async with self.ctx.lock:
                await self._settle_locked(command_id, agent)
        finally:
            self.watcher.in_grace.discard(agent.tmux_session)
        if self.ctx.agents_dirty:
            await self.watcher.report()
        await self.flush_outbox()

    async def _settle_locked(self, command_id: str, agent: ManagedAgent) -> None:
        ctx = self.ctx
        if command_id not in ctx.state.started:
            return  # settled already (a recovery after a restart)
        try:
            pane = (await ctx.tmux.panes()).get(agent.tmux_session)
        except TmuxError as exc:
            log.warning("cannot look at tmux session %s: %s", agent.tmux_session, exc)
            pane = PaneState(pid=agent.pid, dead=False, status=None)
        managed = ctx.state.agent(agent.agent_id) is not None
        if (pane is not None and not pane.dead) or (pane is None and not managed):
            # Running; or already shut down by a later command: it did start.
            result: dict[str, Any] = {"status": "done", "agentId": agent.agent_id}
        else:
            why = await self.agents.exit_report(agent.provider, agent.tmux_session, pane)
            self.agents.drop(agent)
            why += await self.agents.discard_worktree(ctx.state.started[command_id])
            result = {"status": "failed", "error": clip(
                f"the provider exited within {ctx.config.start_grace:g}s of its start "
                f"and is not running: {why}"
            )}
        self.finish(command_id, result)


def describe(command: dict[str, Any]) -> str:
    """A command's arguments for the log: names and sizes, never the prompt itself."""
    parts = []
    for key in ("provider", "agentId", "label", "cwd", "approvalMode", "resume", "removeWorktree"):
        if command.get(key):
            parts.append(f"{key}={command[key]}")
    if command.get("worktree") is not None:  # {} (a derived branch) is asked for too
        parts.append(f"worktree={command['worktree']}")
    if command.get("prompt"):
        parts.append(f"prompt={len(command['prompt'])} chars")
    if isinstance(command.get("text"), str):  # an input's text is in the relay's log, not ours
        parts.append(f"text={len(command['text'])} chars")
    return " ".join(parts)
