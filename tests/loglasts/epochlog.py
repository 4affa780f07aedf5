"""Real relay logs with epochs, written through the real write path in this process.

``RelayService`` with its real writer thread, real SQLite file (or PostgreSQL)
and a ``FakeClock`` the test holds, so that time-based epoch closes happen
when the test says, not after a sleep. Commands are submitted in groups so
the writer commits them in batches, as under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay import commands as c
from relay.clock import FakeClock
from relay.config import Settings
from relay.service import RelayService

Step = Callable[[RelayService, FakeClock], Awaitable[None]]


def register(aid: str, at: int) -> c.RegisterAgent:
    return c.RegisterAgent(
        agent_id=aid, name=aid, label=None, tags=[], machine=None, capabilities=[], meta={}, at=at
    )


async def heartbeats(
    service: RelayService, clock: FakeClock, count: int, agents: int = 5, group: int = 40
) -> None:
    """``count`` heartbeats spread over ``agents`` agents (registered first if new), in groups."""
    for i in range(agents):
        aid = f"a{i}"
        if aid not in service.rm.agents:
            await service.execute(register(aid, clock.now_ms()))
    done = 0
    while done < count:
        n = min(group, count - done)
        await asyncio.gather(
            *(
                service.execute(c.HeartbeatAgent(agent_id=f"a{(done + k) % agents}", at=clock.advance(10)))
                for k in range(n)
            )
        )
        done += n


def run_relay(data: Path, steps: list[Step], clock: FakeClock | None = None, **settings: Any) -> FakeClock:
    """Start a relay on ``data``, run ``steps`` against it, stop it; returns the clock."""
    clock = clock or FakeClock()
    settings.setdefault("archive", False)  # closed epochs stay live unless a test archives them

    async def main() -> None:
        service = RelayService(Settings(data_dir=data, **settings), clock=clock)
        await service.start(run_reaper=False)
        try:
            for step in steps:
                await step(service, clock)
        finally:
            await service.stop()

    asyncio.run(main())
    return clock


def beats(count: int, agents: int = 5) -> Step:
    async def step(service: RelayService, clock: FakeClock) -> None:
        await heartbeats(service, clock, count, agents)

    return step


def wait(ms: int) -> Step:
    async def step(service: RelayService, clock: FakeClock) -> None:
        clock.advance(ms)

    return step
