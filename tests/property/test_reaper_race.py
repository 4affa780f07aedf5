"""Invariant 5 under real concurrency: thousands of heartbeat/reap races.

Each round makes two entities stale on a fake clock: the *target*, whose
heartbeat races the reap, and a *control*, which nobody saves. Two threads
then fire ``POST /api/system/reap`` and the target's heartbeat at the relay
over real sockets; the writer thread, the event loop and the two clients run
concurrently. The service's ``reap_hook`` holds the reaper for a random
0.5-3 ms between its decision (read from the read models) and its write:
the window in which a heartbeat can commit after the reaper has judged the
target stale. In half the rounds the heartbeat is aimed at that window (sent
once the hook says the reaper has decided); in the other half it is fired
with random head starts on both requests, so that the heartbeat also lands
before the decision or after the write. Nothing sleeps to synchronise: both requests are
awaited, and the outcome is read from the log.

Every round, from the log alone (positions are commit order):

- the decision was at read-model position D (the hook saw it), the target's
  heartbeat committed at H, its reap (if any) at R;
- H > D and R > H would be the bug: a reap written after a heartbeat
  committed, on the strength of a decision made before it;
- H <= D means the reaper saw the heartbeat, so it must not reap at all;
- R < H is a reap that won the race fairly; the heartbeat then revived the
  target (invariant 6);
- the target is online at the end, and the control was reaped (the reaper
  was really deciding, every round).

"Inside the window" counts the rounds where D < H and no reap of the target
followed: a heartbeat committed between decision and write, and won. The
test asserts that this happened in a large share of rounds, so it cannot pass
without exercising the race.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from relay.clock import FakeClock
from tests.property.inprocess import InProcessRelay
from tests.property.logaudit import LogAudit, entry_from_api
from tests.support.client import Client

STALE_S = 5.0
STALE_MS = int(STALE_S * 1000)
T0 = 1_700_000_000_000
# ci: bounded; thorough: five times as many rounds.
ROUNDS = 2_000 if settings.default.max_examples <= 100 else 10_000
TARGETS = (("agent", "racer"), ("orchestrator", "host"))


def heartbeat_path(kind: str, eid: str) -> str:
    return f"/api/agents/{eid}/heartbeat" if kind == "agent" else f"/api/orchestrators/{eid}/heartbeat"


@pytest.mark.slow
def test_heartbeat_racing_the_reaper_always_wins(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rng = random.Random(20240605)  # fixed, so a failing run can be repeated
    decided = threading.Event()
    decisions: dict[int, tuple[int, str]] = {}  # round -> (D, target's status at D)
    round_no = 0
    target: tuple[str, str] = TARGETS[0]

    with InProcessRelay(tmp_path / "data", clock, stale_after=STALE_S, reap_every=3600.0) as relay:
        service = relay.service

        async def hold_between_decide_and_write() -> None:
            table = service.rm.agents if target[0] == "agent" else service.rm.orchestrators
            decisions[round_no] = (service.rm.position, table[target[1]]["status"])
            decided.set()
            await asyncio.sleep(rng.uniform(0.0005, 0.003))

        service.reap_hook = hold_between_decide_and_write
        main, reaper, beater = Client(relay.url), Client(relay.url), Client(relay.url)
        assert main.post("/api/agents", json={"id": "racer"}).status == 201
        assert main.post("/api/agents", json={"id": "control-a"}).status == 201
        body = {"id": "host", "hostname": "host", "baseDir": "/srv"}
        assert main.post("/api/orchestrators", json=body).status == 201
        body = {"id": "control-o", "hostname": "control", "baseDir": "/srv"}
        assert main.post("/api/orchestrators", json=body).status == 201

        outcomes: Counter[str] = Counter()
        failures: list[str] = []
        pool = ThreadPoolExecutor(2)
        try:
            for round_no in range(ROUNDS):
                target = TARGETS[round_no % 2]
                control = ("agent", "control-a") if target[0] == "agent" else ("orchestrator", "control-o")
                # Both come back online (the last advance reaped them), then time passes.
                assert main.post(heartbeat_path(*target)).status == 200
                assert main.post(heartbeat_path(*control)).status == 200
                start = main.log_head()
                clock.advance(STALE_MS + 1 + rng.randrange(0, 5))
                decided.clear()
                aimed = round_no % 4 < 2

                # Free rounds: random head starts either way (these are the race's
                # inputs, not synchronisation), so some heartbeats commit before the
                # decision and some after the reap's write.
                reap_delay = 0.0 if aimed else rng.uniform(0, 0.006)
                beat_delay = 0.0 if aimed else rng.uniform(0, 0.005)

                def reap(delay: float = reap_delay) -> Any:
                    time.sleep(delay)
                    return reaper.post("/api/system/reap")

                def beat(
                    aimed: bool = aimed, delay: float = beat_delay, path: str = heartbeat_path(*target)
                ) -> Any:
                    if aimed:
                        decided.wait(10)
                    time.sleep(delay)
                    return beater.post(path)

                f_reap, f_beat = pool.submit(reap), pool.submit(beat)
                r_reap, r_beat = f_reap.result(30), f_beat.result(30)
                assert r_reap.status == 200 and r_beat.status == 200, (r_reap, r_beat)
                verdict = judge(main, start, round_no, target, control, decisions.get(round_no))
                outcomes[verdict] += 1
                if verdict.startswith("BUG"):
                    failures.append(f"round {round_no} ({'aimed' if aimed else 'free'}): {verdict}")
        finally:
            pool.shutdown()

        # The whole log once more, by the audit's rules (3, 4, 5, 7, 12), exact times.
        audit = LogAudit(STALE_MS)
        audit.started(1, T0)
        after = 0
        while True:
            page = main.get(f"/api/log?after={after}&limit=1000").json
            audit.feed(entry_from_api(e) for e in page["events"])
            if len(page["events"]) < 1000:
                break
            after = page["next"]
        for client in (main, reaper, beater):
            client.close()

    print(f"\n{ROUNDS} heartbeat/reap races: {dict(outcomes)}")
    assert not failures, failures[:10]
    assert not any(audit.violations.values()), dict(audit.violations)
    inside = outcomes["heartbeat inside the window: won"]
    assert inside >= ROUNDS // 4, (
        f"only {inside} of {ROUNDS} heartbeats landed between the reaper's decision and its "
        f"write; the race was not exercised ({dict(outcomes)})"
    )


def judge(
    client: Client,
    start: int,
    round_no: int,
    target: tuple[str, str],
    control: tuple[str, str],
    decision: tuple[int, str] | None,
) -> str:
    """Classify one round from the log; a verdict starting with BUG is a broken invariant."""
    events = client.get(f"/api/log?after={start}&limit=100").json["events"]
    mine = [e for e in events if (e["entityKind"], e["entityId"]) == target]
    beats = [e["position"] for e in mine if e["type"].endswith("HeartbeatReceived")]
    reaps = [e["position"] for e in mine if e["type"].endswith("Reaped")]
    control_reaped = any(
        (e["entityKind"], e["entityId"]) == control and e["type"].endswith("Reaped") for e in events
    )
    shown = client.get(
        f"/api/agents/{target[1]}" if target[0] == "agent" else f"/api/orchestrators/{target[1]}"
    ).json
    if decision is None:
        return "BUG: the reaper did not decide (the control was not stale?)"
    if decision[1] != "online":
        return f"BUG in the test: the target was {decision[1]} when the reaper decided"
    if not control_reaped:
        return "BUG: the stale control was not reaped"
    if len(beats) != 1 or len(reaps) > 1:
        return f"BUG: expected one heartbeat and at most one reap, got {mine}"
    if shown["status"] != "online":
        return f"BUG: the target ended {shown['status']}"
    d, h, r = decision[0], beats[0], reaps[0] if reaps else None
    if h <= d:  # the read models had applied the heartbeat when the reaper decided
        return "heartbeat before the decision" if r is None else f"BUG: reaped at {r} after H={h} <= D={d}"
    if r is None:
        return "heartbeat inside the window: won"
    if r < h:
        return "heartbeat after the reap: revived"
    return f"BUG: decision at {d}, heartbeat committed at {h}, reap still written at {r}"
