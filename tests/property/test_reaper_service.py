"""The reaper's wiring in the real service: the grace after a start, the schedule.

The state machine replays the service's sequence (decide, hook, write) but
plays the service's own part in starting and scheduling; these tests run
``RelayService.start`` and ``_reap_forever`` themselves.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from relay import commands as c
from relay.clock import FakeClock
from relay.config import Settings
from relay.service import RelayService
from tests.support.client import Client
from tests.support.server import RelayProcess

STALE_S = 9.0
STALE_MS = int(STALE_S * 1000)
T0 = 1_700_000_000_000
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


@settings(max_examples=min(20, settings.default.max_examples))
@given(quiet_before_stop=st.integers(0, 2 * STALE_MS), downtime=st.integers(0, 4 * STALE_MS))
def test_no_reap_until_a_full_stale_after_since_the_start(quiet_before_stop: int, downtime: int) -> None:
    """Invariant 10 through ``RelayService.start``: silence during downtime never counts."""
    data = Path(tempfile.mkdtemp(prefix="relay-grace-", dir=SCRATCH))
    clock = FakeClock(T0)
    cfg = Settings(data_dir=data, stale_after=STALE_S, reap_every=3600.0)

    async def scenario() -> None:
        first = RelayService(cfg, clock=clock)
        await first.start(run_reaper=False)
        await first.execute(c.RegisterAgent("a", "a", None, [], None, [], {}, clock.now_ms()))
        await first.execute(
            c.RegisterOrchestrator.of("o", "host", "/srv", ["claude"], [], {}, "0" * 64, clock.now_ms())
        )
        clock.advance(quiet_before_stop)
        await first.stop()
        clock.advance(downtime)

        second = RelayService(cfg, clock=clock)
        await second.start(run_reaper=False)
        start = clock.now_ms()
        assert second.started_at == start
        for since_start in (0, 1, STALE_MS // 2, STALE_MS):
            clock.now = start + since_start
            result = await second.reap()
            assert (result.reaped_agent_ids, result.reaped_orchestrator_ids) == ([], []), (
                f"reaped {since_start} ms after a start; the grace is a full stale-after"
            )
        clock.now = start + STALE_MS + 1
        result = await second.reap()
        assert (result.reaped_agent_ids, result.reaped_orchestrator_ids) == (["a"], ["o"])
        await second.stop()

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_the_scheduled_reaper_detects_silence_within_stale_after_plus_reap_every(
    tmp_path: Path,
) -> None:
    """Invariant 2 on the real schedule and the real clock.

    ``--reap-every`` 0.25 s, ``--stale-after`` 0.3 s: an entity that goes
    silent at its lastSeen L must be reaped by L + 0.55 s, plus the event
    loop's own lateness, allowed 0.25 s here (the run-to-run drift of one
    ``asyncio.sleep`` on a loaded 2-core machine is well below that).
    """
    stale_ms, every_ms, slack_ms = 300, 250, 250
    args = ["--stale-after", str(stale_ms / 1000), "--reap-every", str(every_ms / 1000)]
    with RelayProcess(tmp_path / "data", args) as relay:
        client = Client(relay.url)
        last_seen = {}
        for aid in ("s1", "s2", "s3"):
            last_seen[aid] = client.post("/api/agents", json={"id": aid}).json["lastSeen"]
            time.sleep(0.07)  # spread the silences over the schedule's phase
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            offline = {a["id"] for a in client.get("/api/agents?status=offline").json}
            if offline >= set(last_seen):
                break
            time.sleep(0.02)
        events = client.get("/api/log?after=0&limit=1000").json["events"]
        client.close()
    reaped = {e["entityId"]: e["at"] for e in events if e["type"] == "AgentReaped"}
    assert set(reaped) == set(last_seen), f"not all reaped within 20 s: {reaped}"
    for aid, at in reaped.items():
        silence = at - last_seen[aid]
        assert silence > stale_ms, f"{aid} reaped after {silence} ms (invariant 3)"
        assert silence <= stale_ms + every_ms + slack_ms, (
            f"{aid} reaped {silence} ms after its last heartbeat; the bound is "
            f"stale-after + reap-every = {stale_ms + every_ms} ms (+{slack_ms} ms loop slack)"
        )
