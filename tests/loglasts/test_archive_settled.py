"""Memory that stays flat: settled messages leave the writer's live aggregates.

A command's control message is settled with its result; after
``--keep-settled`` (domain time) the writer no longer holds it, and a later
command that names it loads it from the log again: nothing leaves history.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay import commands as c
from relay.clock import FakeClock
from relay.config import Settings
from relay.domain.message import Message
from relay.service import RelayService


def run(data: Path, keep: str) -> tuple[bool, bool, int]:
    clock = FakeClock()

    async def main() -> tuple[bool, bool, int]:
        service = RelayService(Settings(data_dir=data, keep_settled=keep), clock=clock)
        await service.start(run_reaper=False)
        try:
            await service.execute(c.RegisterOrchestrator.of(
                orchestrator_id="o1", hostname="h", base_dir="/w", providers=["claude"],
                env_keys=[], meta={}, token_hash="0" * 64, at=clock.advance(1),
            ))
            for i in range(20):
                await service.execute(c.RequestSpawn(
                    orchestrator_id="o1", command_id=f"cmd{i}", provider="claude", cwd=None,
                    label=None, approval_mode="auto", prompt=None, requested_by="t", at=clock.advance(1),
                ))
                await service.execute(c.RecordCommandResult(
                    orchestrator_id="o1", command_id=f"cmd{i}", status="done", error=None,
                    agent_id=None, at=clock.advance(1),
                ))
            app = service.app
            assert app is not None
            ids = [Message.create_id(f"cmd{i}") for i in range(20)]
            before = all(mid in app.live for mid in ids)
            clock.advance(2 * 3_600_000)
            await service.execute(c.HeartbeatOrchestrator(orchestrator_id="o1", at=clock.advance(1)))
            after = any(mid in app.live for mid in ids)
            # Still in history: loading it again gives the settled message.
            again = await asyncio.get_running_loop().run_in_executor(None, app.message, "cmd3")
            return before, after, again.version
        finally:
            await service.stop()

    return asyncio.run(main())


def test_settled_messages_leave_memory_after_keep_settled(tmp_path: Path) -> None:
    before, after, version = run(tmp_path / "a", "1h")
    assert before and not after
    assert version >= 2  # sent, then settled


def test_forever_keeps_them(tmp_path: Path) -> None:
    before, after, _ = run(tmp_path / "b", "forever")
    assert before and after
