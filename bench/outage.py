"""Mass outage: 1,000 hosts, 70 % go silent at once; the reaper holds back (issue 15).

Everything goes through the real write path: ``RelayService`` in this
process on a temporary SQLite folder (registrations, heartbeats and reap
passes are the same commands the HTTP handlers and the reaper send), with a
simulated clock so that minutes of fleet time take seconds. The scenario:

1. 1,000 hosts register and heartbeat every ``stale/3``; reap passes run
   every ``reap-every``: nobody is reaped.
2. 5 hosts die (a normal failure): they are reaped, the brake is not touched.
3. 700 of the remaining hosts go silent at once (the relay's own network is
   cut off from them). Every pass during the outage reaps nobody; the first
   records ``ReapSuspended``.
4. 600 of them come back together; the next pass is under the threshold and
   records ``ReapResumed``; the other 60 come back within the fresh grace
   (``stale-after`` from the resume) and are never reaped.
5. The 40 that never come back are reaped once the fresh grace is over.

Run: ``.venv/bin/python bench/outage.py`` (about half a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from relay import commands as c
from relay.clock import FakeClock
from relay.config import Settings
from relay.service import RelayService

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000_000


def stored_events(data_dir: Path, topics: tuple[str, ...]) -> list[tuple[int, str, bytes]]:
    """(position, topic, state) of the events with these topics, read straight from the file."""
    with sqlite3.connect(f"file:{data_dir / 'relay.sqlite'}?mode=ro", uri=True) as con:
        marks = ",".join("?" * len(topics))
        rows = con.execute(
            f"SELECT rowid, topic, state FROM stored_events WHERE topic IN ({marks}) ORDER BY rowid",
            topics,
        ).fetchall()
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]


async def scenario(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    clock = FakeClock(T0)
    stale_ms = int(args.stale_after * 1000)
    beat_ms = stale_ms // 3
    reap_ms = int(args.reap_every * 1000)
    cfg = Settings(
        data_dir=data, stale_after=args.stale_after, reap_every=args.reap_every,
        max_reap_fraction=0.5, max_reap_min=10,
    )
    svc = RelayService(cfg, clock=clock)
    await svc.start(run_reaper=False)
    out: dict[str, Any] = {"hosts": args.hosts}
    ids = [f"host-{i:04d}" for i in range(args.hosts)]
    t = time.perf_counter()
    await asyncio.gather(*(
        svc.execute(c.RegisterOrchestrator.of(
            oid, f"{oid}.lan", "/srv/work", ["claude", "codex"], [], {}, "0" * 64,
            clock.now_ms(), max_agents=8,
        ))
        for oid in ids
    ))
    out["register_s"] = time.perf_counter() - t

    alive = set(ids)
    last_beat = clock.now_ms()
    pass_ms: list[float] = []
    reaped_at: dict[str, int] = {}

    async def run_until(end: int) -> list[c.ReapResult]:
        """Advance the clock pass by pass; the alive hosts beat at their pace."""
        nonlocal last_beat
        results = []
        while clock.now_ms() + reap_ms <= end:
            clock.advance(reap_ms)
            if clock.now_ms() - last_beat >= beat_ms:
                last_beat = clock.now_ms()
                await asyncio.gather(*(
                    svc.execute(c.HeartbeatOrchestrator(oid, clock.now_ms(), {"activeAgents": 1}))
                    for oid in sorted(alive)
                ))
            t0 = time.perf_counter()
            result = await svc.reap()
            pass_ms.append((time.perf_counter() - t0) * 1000)
            for oid in result.reaped_orchestrator_ids:
                reaped_at[oid] = clock.now_ms()
            results.append(result)
        return results

    # 1. healthy fleet, past the start-up grace
    healthy = await run_until(clock.now_ms() + 2 * stale_ms)
    out["healthy_reaps"] = sum(len(r.reaped_orchestrator_ids) for r in healthy)

    # 2. a normal failure: five hosts die
    dead = ids[:5]
    alive -= set(dead)
    small = await run_until(clock.now_ms() + 2 * stale_ms)
    out["small_failure_reaped"] = sorted({o for r in small for o in r.reaped_orchestrator_ids})

    # 3. the outage: 70 % of the fleet goes silent at once
    silent = ids[5 : 5 + int(args.hosts * 0.7)]
    alive -= set(silent)
    outage_start = clock.now_ms()
    during = await run_until(outage_start + args.outage * 1000)
    out["outage_passes"] = len(during)
    out["outage_reaps"] = sum(len(r.reaped_orchestrator_ids) for r in during)
    out["suspended_passes"] = sum(r.suspended for r in during)

    # 4. most come back at once; the rest within the fresh grace; some never
    back_now = silent[: len(silent) - 100]
    late = silent[len(back_now) : len(back_now) + 60]
    never = silent[len(back_now) + len(late) :]
    alive |= set(back_now)
    last_beat = clock.now_ms() - beat_ms  # everyone alive beats on the next pass
    return_at = clock.now_ms() + reap_ms
    await run_until(return_at + 2 * reap_ms)
    resumed_at = int(svc.rm.reaper.get("resumedAt") or 0)
    out["resumed_after_return_ms"] = resumed_at - return_at if resumed_at else None
    await run_until(resumed_at + stale_ms * 2 // 3)  # the late ones return within the grace
    alive |= set(late)
    await run_until(resumed_at + stale_ms * 3)
    out["late_returned"] = len(late)
    out["late_reaped"] = sorted(o for o in late if o in reaped_at)
    out["back_reaped"] = sorted(o for o in back_now if o in reaped_at)
    out["never_returned"] = len(never)
    out["never_reaped"] = sum(o in reaped_at for o in never)
    out["never_reaped_after_resume_ms"] = (
        min(reaped_at[o] for o in never if o in reaped_at) - resumed_at if never else None
    )
    out["pass_ms_median"] = sorted(pass_ms)[len(pass_ms) // 2]
    out["pass_ms_max"] = max(pass_ms)
    out["passes"] = len(pass_ms)
    out["fleet_seconds"] = (clock.now_ms() - T0) / 1000
    await svc.stop()
    out["events"] = [
        (pos, topic, state.decode()[:200])
        for pos, topic, state in stored_events(data, ("ReapSuspended", "ReapResumed"))
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--stale-after", type=float, default=90.0)
    parser.add_argument("--reap-every", type=float, default=15.0)
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the outage lasts")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="relay-outage-"))
    t = time.perf_counter()
    try:
        out = asyncio.run(scenario(args, data))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    wall = time.perf_counter() - t
    print(f"mass outage: {out['hosts']} hosts, stale-after {args.stale_after:g} s, "
          f"reap every {args.reap_every:g} s, brake 0.5 / 10")
    print(f"  registered {out['hosts']} hosts through RelayService in {out['register_s']:.2f} s")
    print(f"  healthy fleet: {out['healthy_reaps']} reaps")
    print(f"  5 hosts die: reaped {len(out['small_failure_reaped'])} "
          f"({', '.join(out['small_failure_reaped'])})")
    print(f"  {int(args.hosts * 0.7)} hosts silent for {args.outage:g} s: {out['outage_passes']} "
          f"passes, {out['outage_reaps']} reaps, {out['suspended_passes']} passes suspended (the "
          f"other {out['outage_passes'] - out['suspended_passes']} came before anyone had been "
          f"silent for stale-after)")
    print(f"  ReapResumed {out['resumed_after_return_ms']} ms after the hosts came back")
    print(f"  {out['late_returned']} hosts back within the fresh grace: "
          f"{len(out['late_reaped'])} reaped; hosts back at once: {len(out['back_reaped'])} reaped")
    print(f"  {out['never_returned']} hosts never back: {out['never_reaped']} reaped, "
          f"{out['never_reaped_after_resume_ms']} ms after the resume (grace "
          f"{args.stale_after * 1000:g} ms)")
    print(f"  reap pass over {out['hosts']} hosts: median {out['pass_ms_median']:.1f} ms, "
          f"max {out['pass_ms_max']:.1f} ms ({out['passes']} passes)")
    print(f"  {out['fleet_seconds']:.0f} s of fleet time in {wall:.1f} s of wall time")
    for pos, topic, state in out["events"]:
        print(f"  log position {pos}: {topic} {state}")


if __name__ == "__main__":
    main()
