"""The watcher: notice agents that ended, restart failed ones, tell the relay.

An agent's tmux pane can end at any time. The watcher looks every
``--check-every`` seconds, reports why an agent ended, schedules a restart
with backoff for a failed exit or gives up on a crash loop (ADR 0026), and
PATCHes the managed-agent list whenever it changed.
"""

from __future__ import annotations

import logging
import time

from relay.host.agents import AgentRunner, CommandFailedError
from relay.host.client import RelayClientError
from relay.host.config import as_registered
from relay.host.context import HostContext, now_ms
from relay.host.crashloop import ExitSeen
from relay.host.lifecycle import load_report
from relay.host.registration import Registration
from relay.host.state import ManagedAgent
from relay.host.tmux import PaneState, TmuxError

log = logging.getLogger("relay.host")

STATUS_WAIT = 2.0  # seconds to wait for tmux to report how a dead pane's program ended


class AgentWatcher:
    """Keeps the managed-agent list true to tmux, and the relay told of it."""

    def __init__(self, ctx: HostContext, registration: Registration, agents: AgentRunner) -> None:
        self.ctx = ctx
        self.registration = registration
        self.agents = agents
        # Sessions whose spawn is not settled yet: the spawn's grace wait
        # reports how they ended, the watcher leaves them alone.
        self.in_grace: set[str] = set()
        self._no_status: dict[str, float] = {}  # dead panes without an exit status: first seen

    async def run(self) -> None:
        """Notice agents that died, restart failed ones when due, and report the new list."""
        ctx = self.ctx
        while not ctx.stopping.is_set():
            await ctx.sleep(ctx.config.check_every)
            async with ctx.lock:
                changed = await self.refresh()
                changed = await self.restart_due() or changed
            if changed:
                await self.report()

    async def refresh(self) -> bool:
        """Drop agents whose tmux session is gone; True when the list changed."""
        ctx = self.ctx
        try:
            panes = await ctx.tmux.panes()
        except TmuxError as exc:
            log.warning("cannot list tmux sessions: %s", exc)
            return False
        live = {name for name, pane in panes.items() if not pane.dead} | self.in_grace
        # Agents waiting for a restart or given up on have no session by design.
        live |= {a.tmux_session for a in ctx.state.agents if ctx.crash.waiting(a)}
        for name, pane in panes.items():
            # tmux marks a pane dead when its terminal closes and fills in the
            # status when it reaps the child, which a loaded machine delays:
            # wait up to STATUS_WAIT seconds for the status.
            if pane.dead and pane.status is None and pane.signal is None:
                first = self._no_status.setdefault(name, time.monotonic())
                if time.monotonic() - first < STATUS_WAIT:
                    live.add(name)
        dead = [a for a in ctx.state.agents if a.tmux_session not in live]
        if not dead:
            return False
        for agent in dead:
            self._no_status.pop(agent.tmux_session, None)
            pane = panes.get(agent.tmux_session)
            if pane is None:
                log.warning(
                    "agent %s stopped (tmux session %s is gone)",
                    agent.agent_id, agent.tmux_session,
                )
            else:
                log.warning("agent %s stopped: %s", agent.agent_id,
                            await self.agents.exit_report(agent.provider, agent.tmux_session, pane))
                if self._supervise(agent, pane):
                    live.add(agent.tmux_session)
        ctx.state.agents = [a for a in ctx.state.agents if a.tmux_session in live]
        ctx.agents_dirty = True
        ctx.save()
        return True

    def _supervise(self, agent: ManagedAgent, pane: PaneState) -> bool:
        """A failed exit: schedule a restart or give up (crashloop); True keeps the agent listed."""
        crash = self.ctx.crash
        seen = ExitSeen(pane.status, pane.signal, now_ms())
        if not seen.failed:
            return False  # exit 0: it finished its work
        if crash.on_exit(agent, seen):
            log.warning("agent %s will be restarted in %.1fs (%d restart(s) in the last %gs)",
                        agent.agent_id, (agent.restart_due or seen.at) / 1000 - seen.at / 1000,
                        len(agent.restarts), crash.restart_window)
        else:
            log.error("agent %s is crash-looping: %d restart(s) in %gs, last exit %s; "
                      "not restarting it (a restart command starts it afresh)",
                      agent.agent_id, len(agent.restarts), crash.restart_window,
                      agent.last_exit)
        return True

    async def restart_due(self) -> bool:
        """Restart the agents whose backoff is over; True when any changed (call under the lock)."""
        ctx = self.ctx
        changed = False
        for agent in list(ctx.state.agents):
            now = now_ms()
            if not ctx.crash.due(agent, now):
                continue
            changed = True
            try:
                await self.agents.restart(agent)
            except (CommandFailedError, TmuxError) as exc:
                log.warning("could not restart %s: %s", agent.agent_id, exc)
                ctx.crash.restarted(agent, now)
                ctx.crash.start_failed(agent, now)
                continue
            ctx.crash.restarted(agent, now)
        if changed:
            ctx.agents_dirty = True
            ctx.save()
        return changed

    async def report(self) -> None:
        """PATCH the full managed-agent list; on failure the heartbeat loop retries."""
        ctx = self.ctx
        if not self.registration.ready.is_set():
            return
        ctx.agents_dirty = False
        agents = [a.to_wire() for a in ctx.state.agents]
        for wire in agents:
            wire["cwd"] = as_registered(ctx.config.base_dir, wire["cwd"])
            if "worktree" in wire:
                wire["worktree"] = as_registered(ctx.config.base_dir, wire["worktree"])
        load = load_report(ctx.crash.running(ctx.state.agents))
        call = self.registration.call
        try:
            await call(lambda: ctx.client.report_agents(agents))
            # The load a heartbeat carries wins over the list until the next
            # beat; send the new one now, not a heartbeat interval later.
            await call(lambda: ctx.client.heartbeat(load))
        except RelayClientError as exc:
            ctx.agents_dirty = True
            log.warning("could not report managed agents yet: %s", exc)
