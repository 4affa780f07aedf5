"""Helpers for the archive tests: a relay log with epochs, its twin, and comparisons."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from relay import commands as c
from relay.application import RelayApp
from relay.audit.log import AppLog
from relay.clock import FakeClock
from relay.config import Settings
from relay.service import RelayService
from relay.store import store_env
from relay.store.archive import open_archive
from relay.store.reader import LogReader
from tests.loglasts.epochlog import Step, heartbeats, register


def fleet(count: int, agents: int = 5) -> Step:
    """Heartbeats and, between them, every other kind of event an entity has."""

    async def step(service: RelayService, clock: FakeClock) -> None:
        await heartbeats(service, clock, count // 2, agents)
        await service.execute(c.RemoveAgent(agent_id="a1", at=clock.advance(5)))
        await service.execute(register("a1", clock.advance(5)))
        await heartbeats(service, clock, count - count // 2, agents)

    return step


def copy_data(src: Path, dst: Path) -> None:
    """A stopped relay's data folder, copied (the twin keeps every epoch live)."""
    shutil.copytree(src, dst)


def open_reader(data: Path) -> tuple[RelayApp, LogReader]:
    app = RelayApp(store_env(Settings(data_dir=data)))
    return app, LogReader(AppLog(app), open_archive(app, data))


def rows(reader: Any, after: int = 0, limit: int = 777) -> list[tuple[Any, ...]]:
    """Every event through ``reader``, in pages of an odd size (pages cross segment ends)."""
    out: list[tuple[Any, ...]] = []
    while True:
        page = reader.select(after, limit)
        if not page:
            return out
        out += [(n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state)) for n in page]
        after = page[-1].id


def archive_now(data: Path, clock: FakeClock, **settings: Any) -> None:
    """Start a relay on ``data`` (archiving on), bring the archive up to date, stop."""

    async def main() -> None:
        service = RelayService(Settings(data_dir=data, **settings), clock=clock)
        await service.start(run_reaper=False)
        try:
            assert service.archiver is not None
            await asyncio.get_running_loop().run_in_executor(None, service.archiver.run_now)
        finally:
            await service.stop()

    asyncio.run(main())
