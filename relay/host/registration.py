"""Registration: who this host is to the relay, and getting (back) on its books.

A host registers at start, again when its base dir listing changes, and
again whenever the relay answers as if it never heard of it (404/401/403
after a relay reset or a removal). Several loops may find that out at
once; a generation counter makes them register once between them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from relay import __version__
from relay.host.client import NotRegisteredError, RelayRejectedError, RelayUnavailableError
from relay.host.config import HostConfig, list_dirs
from relay.host.context import Backoff, HostContext
from relay.host.lifecycle import LifecycleConfig, heartbeat_interval

log = logging.getLogger("relay.host")


def registration_payload(
    config: HostConfig, lifecycle: LifecycleConfig | None = None
) -> dict[str, Any]:
    """What ``POST /api/orchestrators`` gets: names only, never env values."""
    dirs, truncated = list_dirs(config.base_dir, config.max_dirs)
    return {
        **(lifecycle.registration_fields() if lifecycle else {}),
        "id": config.orchestrator_id,
        "hostname": config.hostname,
        "baseDir": str(config.base_dir),
        "providers": sorted(config.providers),
        "envKeys": config.env_keys,
        "meta": {
            "dirs": dirs,
            "dirsTruncated": truncated,
            "daemon": "relay host",
            "version": __version__,
            "pid": os.getpid(),
        },
    }


class Registration:
    """Keeps this host registered; ``call`` runs a request that needs it."""

    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.ready = asyncio.Event()
        # The relay's pace once registered (heartbeatIntervalMs); ours until then.
        self.heartbeat_every = ctx.config.heartbeat_every
        self.last_dirs: list[str] | None = None
        self.generation = 0  # counts registrations, so concurrent 404s register once
        # The managed agents as the relay last answered a registration with them, by id:
        # what the attention watcher starts from after a restart (ADR 0032).
        self.relay_agents: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        # What to do right after each registration (report agents, flush results);
        # the daemon sets it, as it owns those parts.
        self.after: Callable[[], Awaitable[None]] | None = None

    async def ensure(self, force: bool = False, seen: int | None = None) -> None:
        """Register (again when ``force``), retrying with backoff until it works.

        ``seen`` is the registration generation a failed call ran under: when
        another task has registered since, there is nothing left to do.
        """
        config = self.ctx.config
        async with self._lock:
            if self.ready.is_set() and not force:
                return
            if seen is not None and seen != self.generation:
                return
            self.ready.clear()
            backoff = Backoff(config.max_backoff)
            while not self.ctx.stopping.is_set():
                payload = registration_payload(config, self.ctx.lifecycle)
                try:
                    answer = await self.ctx.client.register(payload)
                except RelayRejectedError as exc:
                    log.error("the relay refused the registration (%s); retrying", exc)
                except RelayUnavailableError as exc:
                    log.warning("cannot reach the relay to register: %s", exc)
                else:
                    self.last_dirs = payload["meta"]["dirs"]
                    self._follow_pace(answer)
                    self.relay_agents = {
                        str(m.get("agentId")): m
                        for m in (answer.get("managedAgents") or [] if isinstance(answer, dict) else [])
                        if isinstance(m, dict)
                    }
                    self.generation += 1
                    self.ctx.save()
                    log.info(
                        "registered as %s with %d dir(s) listed, env keys: %s",
                        config.orchestrator_id, len(payload["meta"]["dirs"]),
                        ", ".join(payload["envKeys"]) or "(none)",
                    )
                    self.ctx.agents_dirty = True
                    self.ready.set()
                    break
                await self.ctx.sleep(backoff.next_delay())
        if self.ready.is_set() and self.after is not None:
            # Outside the lock: these calls may themselves find us forgotten.
            await self.after()

    def dirs_changed(self) -> bool:
        """True when the base dir listing differs from the one last published."""
        dirs, _ = list_dirs(self.ctx.config.base_dir, self.ctx.config.max_dirs)
        return dirs != self.last_dirs

    def _follow_pace(self, answer: Any) -> None:
        """Beat at the relay's ``heartbeatIntervalMs``; our --stale-after / 3 if it sends none."""
        pace = heartbeat_interval(answer, self.ctx.config.heartbeat_every)
        if pace != self.heartbeat_every:
            log.info("heartbeat every %.1fs, as the relay asks", pace)
        self.heartbeat_every = pace

    async def call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a call that needs our registration, registering again on 404/401/403."""
        await self.ready.wait()
        generation = self.generation
        try:
            return await call()
        except NotRegisteredError as exc:
            log.warning("the relay does not know this host any more (%s); registering again", exc)
            await self.ensure(force=True, seen=generation)
            return await call()
