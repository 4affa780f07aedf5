"""The host daemon: wires its parts and runs their loops until stopped.

The parts, one concept each:

- ``context``      — what they share: config, tmux, state file, client, the command lock;
- ``registration`` — getting (back) on the relay's books, the heartbeat pace;
- ``stream``       — following this host's commands (SSE with resume, polling fallback);
- ``commands``     — carrying a command out at most once, results through an outbox;
- ``agents``       — starting, restarting and stopping providers in tmux;
- ``watcher``      — noticing agents that ended, crash-loop restarts, reporting the list;
- ``attention``    — noticing agents that wait for a person (hooks, quiet panes), ADR 0032;
- ``recovery``     — settling what a killed daemon left half-done;
- ``output``       — live terminal output of the agents someone watches (ADR 0031).

This module adds the heartbeat loop and the start/stop sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from relay.host.agents import AgentRunner
from relay.host.attention import AttentionWatcher
from relay.host.client import RelayClient, RelayClientError
from relay.host.commands import CommandRunner
from relay.host.config import HostConfig, HostConfigError
from relay.host.context import Backoff, HostContext
from relay.host.crashloop import CrashLoopPolicy
from relay.host.lifecycle import LifecycleConfig, load_report
from relay.host.output import OutputConfig, OutputStreamer
from relay.host.recovery import recover_started
from relay.host.registration import Registration, registration_payload
from relay.host.state import HostState, StateFile
from relay.host.stream import CommandStream
from relay.host.tmux import Tmux, TmuxError
from relay.host.watcher import AgentWatcher

__all__ = ["HostDaemon", "registration_payload"]

log = logging.getLogger("relay.host")


class HostDaemon:
    """One host's orchestrator: owns the state file, the tmux socket and the loops."""

    def __init__(
        self,
        config: HostConfig,
        tmux: Tmux | None = None,
        lifecycle: LifecycleConfig | None = None,
        output: OutputConfig | None = None,
    ) -> None:
        lifecycle = lifecycle or LifecycleConfig()
        self.ctx = HostContext(
            config=config,
            lifecycle=lifecycle,
            tmux=tmux or Tmux(config.tmux_socket),
            state_file=StateFile(config.state_path),
            client=RelayClient(config.relay_url, config.orchestrator_id, config.admin_token),
            crash=CrashLoopPolicy(lifecycle.restart_max, lifecycle.restart_window),
        )
        self.registration = Registration(self.ctx)
        self.agents = AgentRunner(self.ctx)
        self.watcher = AgentWatcher(self.ctx, self.registration, self.agents)
        self.attention = AttentionWatcher(self.ctx, self.registration)
        self.attention.report_agents = self.watcher.report
        self.commands = CommandRunner(
            self.ctx, self.registration, self.agents, self.watcher, self.attention
        )
        self.output = OutputStreamer(self.ctx, output)
        self.stream = CommandStream(self.ctx, self.registration, self.commands, self.output)
        self.registration.after = self._after_registration

    @property
    def config(self) -> HostConfig:
        """The daemon's validated options."""
        return self.ctx.config

    @property
    def state(self) -> HostState:
        """What the state file holds, in memory."""
        return self.ctx.state

    async def _after_registration(self) -> None:
        # A new registration starts with no agents on the relay's books and
        # may have results waiting: send both now, not a heartbeat later.
        await self.watcher.report()
        await self.commands.flush_outbox()

    # ----------------------------------------------------------------- running

    async def run(self) -> None:
        """Run until ``stop()``; agents in tmux keep running after the daemon exits."""
        ctx = self.ctx
        config = ctx.config
        ctx.state = ctx.state_file.load()
        state = ctx.state
        if state.orchestrator_id and state.orchestrator_id != config.orchestrator_id:
            raise HostConfigError(
                f"state file {ctx.state_file.path} belongs to orchestrator "
                f"{state.orchestrator_id!r}; use another --state for "
                f"{config.orchestrator_id!r}"
            )
        if state.relay_url and state.relay_url != config.relay_url:
            log.warning(
                "relay URL changed from %s to %s; log positions of the old relay are dropped",
                state.relay_url, config.relay_url,
            )
            state.last_event_id = None
        state.orchestrator_id = config.orchestrator_id
        state.relay_url = config.relay_url
        ctx.client.orchestrator_token = state.orchestrator_token
        ctx.save()
        log.info(
            "host %s (%s) for %s: base dir %s, providers %s, tmux socket %s, state %s",
            config.orchestrator_id, config.hostname, config.relay_url,
            config.base_dir, ", ".join(sorted(config.providers)),
            config.tmux_socket or "(default)", ctx.state_file.path,
        )
        async with ctx.client:
            await self._scrub_tmux_env()
            # Settle interrupted commands first: a spawn whose provider died
            # meanwhile still has its pane, and so its exit status and output.
            await recover_started(ctx, self.agents)
            await self.watcher.refresh()
            tasks = [
                asyncio.create_task(self._guard("register", self.registration.ensure)),
                asyncio.create_task(self._guard("heartbeat", self.heartbeat_loop)),
                asyncio.create_task(self._guard("commands", self.stream.run)),
                asyncio.create_task(self._guard("watch", self.watcher.run)),
                asyncio.create_task(self._guard("attention", self.attention.run)),
                asyncio.create_task(self._guard("output", self.output.run)),
            ]
            try:
                await ctx.stopping.wait()
                # Let a command that is being carried out finish, so a plain
                # stop never leaves one half-done for the next start to settle.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.lock.acquire(), timeout=10)
            finally:
                # A spawn still in its grace period stays "started" in the
                # state file; the next start settles it from its tmux session.
                settling = list(self.commands.settling)
                for task in [*tasks, *settling]:
                    task.cancel()
                await asyncio.gather(*settling, return_exceptions=True)
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.output.close()
                ctx.save()
        log.info("host daemon stopped; %d managed agent(s) keep running", len(state.agents))

    def stop(self) -> None:
        """Ask ``run()`` to return (signal handlers call this)."""
        self.ctx.stopping.set()

    async def _scrub_tmux_env(self) -> None:
        config = self.ctx.config
        with contextlib.suppress(TmuxError):
            removed = await self.ctx.tmux.scrub_global_env()
            if removed:
                log.warning(
                    "the tmux server on socket %s was started with a wider environment; "
                    "removed %s from its global environment. Its own process still holds "
                    "them: once its agents are done, run tmux -L %s kill-server",
                    config.tmux_socket or "(default)", ", ".join(sorted(removed)),
                    config.tmux_socket or "default",
                )

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Restart a loop that crashed on a bug, after logging it, instead of dying."""
        backoff = Backoff(self.ctx.config.max_backoff)
        while not self.ctx.stopping.is_set():
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s loop failed; restarting it", name)
                await self.ctx.sleep(backoff.next_delay())

    # --------------------------------------------------------------- heartbeat

    async def heartbeat_loop(self) -> None:
        """Beat at the relay's pace; re-register when forgotten or the dirs change."""
        ctx = self.ctx
        registration = self.registration
        backoff = Backoff(ctx.config.max_backoff)
        while not ctx.stopping.is_set():
            await registration.ready.wait()
            try:
                load = load_report(ctx.crash.running(ctx.state.agents))
                await registration.call(lambda load=load: ctx.client.heartbeat(load))
                if registration.dirs_changed():
                    log.info("base dir listing changed; registering again to publish it")
                    await registration.ensure(force=True)
                if ctx.agents_dirty:
                    await self.watcher.report()
                if ctx.state.outbox:
                    await self.commands.flush_outbox()
            except RelayClientError as exc:
                delay = min(backoff.next_delay(), registration.heartbeat_every)
                log.warning("heartbeat failed: %s; next try in %.1fs", exc, delay)
                await ctx.sleep(delay)
                continue
            backoff.reset()
            await ctx.sleep(registration.heartbeat_every)
