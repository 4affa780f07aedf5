"""Following this host's commands: the SSE stream with resume, polling as a fallback.

One loop (``CommandStream.run``) prefers the relay's event stream, resuming
from the last handled log position; it reconciles with the pending list
each time it (re)connects, so nothing requested while it was away is
missed, and falls back to polling that list when the relay has no stream.
"""

from __future__ import annotations

import logging
from typing import Any

from relay.host.client import (
    NotRegisteredError,
    RelayClientError,
    RelayUnavailableError,
    ResumeRefusedError,
    StreamUnsupportedError,
)
from relay.host.commands import CommandRunner
from relay.host.context import Backoff, HostContext
from relay.host.output import OutputStreamer
from relay.host.registration import Registration

log = logging.getLogger("relay.host")


class CommandStream:
    """Feeds the relay's commands for this host to the ``CommandRunner``."""

    def __init__(
        self,
        ctx: HostContext,
        registration: Registration,
        commands: CommandRunner,
        output: OutputStreamer | None = None,
    ) -> None:
        self.ctx = ctx
        self.registration = registration
        self.commands = commands
        self.output = output

    async def run(self) -> None:
        """Follow our commands: SSE with resume, reconcile on connect, poll as fallback."""
        ctx = self.ctx
        backoff = Backoff(ctx.config.max_backoff)
        polls_before_stream_retry = 0
        while not ctx.stopping.is_set():
            await self.registration.ready.wait()
            try:
                if polls_before_stream_retry > 0:
                    polls_before_stream_retry -= 1
                    await self.commands.reconcile()
                    backoff.reset()
                    await ctx.sleep(ctx.config.poll_every)
                    continue
                await self._follow()
                # The relay closed the stream cleanly (e.g. it is stopping):
                # reconnect soon, but never in a hot loop.
                backoff.reset()
                await ctx.sleep(backoff.next_delay())
            except StreamUnsupportedError:
                log.warning("the relay has no event stream; polling pending commands instead")
                polls_before_stream_retry = 30
            except ResumeRefusedError as exc:
                # The relay's log is not the one we followed (reset, restored):
                # follow from now; the pending list read on connect covers the gap.
                log.warning("the relay cannot resume from position %s (%s); following from now",
                            ctx.state.last_event_id, exc)
                ctx.state.last_event_id = None
                ctx.save()
            except NotRegisteredError as exc:
                log.warning("event stream refused (%s); registering again", exc)
                await self.registration.ensure(force=True, seen=self.registration.generation)
            except RelayClientError as exc:
                delay = backoff.next_delay()
                if isinstance(exc, RelayUnavailableError) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                log.warning("lost the command stream: %s; reconnecting in %.1fs", exc, delay)
                await ctx.sleep(delay)

    async def _follow(self) -> None:
        ctx = self.ctx
        async with ctx.client.event_stream(ctx.state.last_event_id) as events:
            log.info(
                "following commands on the event stream from position %s",
                ctx.state.last_event_id or "(tail)",
            )
            # Reconcile once the stream is open: anything requested after the
            # pending list was read arrives on the stream, so nothing is missed.
            try:
                await self.commands.reconcile()
                async for event in events:
                    await self.on_event(event)
            finally:
                if self.output is not None:
                    self.output.on_stream_lost()

    async def on_event(self, event: Any) -> None:
        """Act on one stream event: our command, or our own removal; remember its id."""
        ctx = self.ctx
        data = event.json()
        if event.event == "orchestrator.command" and isinstance(data, dict):
            if data.get("orchestratorId") in (None, ctx.config.orchestrator_id):
                await self.commands.handle(data)
        elif (
            event.event == "orchestrator.removed"
            and isinstance(data, dict)
            and data.get("id") == ctx.config.orchestrator_id
        ):
            log.warning("this host was removed from the relay; registering again")
            await self.registration.ensure(force=True, seen=self.registration.generation)
        elif event.event == "orchestrator.watch" and isinstance(data, dict):
            # Who watches which agent's terminal: not a log event, it has no id (ADR 0031).
            if self.output is not None and data.get("orchestratorId") == ctx.config.orchestrator_id:
                self.output.on_watch(data)
            return
        if event.id:
            ctx.state.last_event_id = event.id
            # Status events come with every heartbeat; replaying a few of them
            # after a crash is harmless, so only command events cost an fsync.
            if event.event == "orchestrator.command":
                ctx.save()
