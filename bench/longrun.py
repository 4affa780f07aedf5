"""A log that lasts (issue 14): simulated days of a fleet, through the real write path.

Not a test: it prints figures. A fleet of ``--hosts`` orchestrators with
``--agents`` agents each heartbeats every ``--heartbeat`` simulated seconds;
a trickle runs beside it: ``--spawns`` spawns per host per day, each with
its control message, its result and the host's managed-agent report (the
host daemon reports only when its list changes: when an agent starts, and
when it ends hours later), and reaps (one agent per host goes silent for 10
minutes a day, is reaped, and registers again). Time is a ``FakeClock``: a
simulated day takes as long as writing it.
Commands go through ``RelayService.execute`` (the writer thread, group
commit, epochs sealed by the writer, the archiver thread), not HTTP.

At the end of each simulated day it prints:

- bytes on disk: live (relay.sqlite + WAL), archive, total data folder;
- archived bytes per event (heartbeats are ~99% of them) at full resolution,
  and thinned bytes per entity per day (the day's segments thinned in memory,
  as ``--keep-heartbeats`` would thin them after 30 days);
- RSS of this process (which hosts the relay), start-up time (the relay is
  stopped and started again), incremental ``relay audit verify`` time;

then projects a year of the default fleet (100 x 5) with default retention.
Run from the repository root, for example::

    .venv/bin/python bench/longrun.py --days 3 --hosts 20 --agents 5 --epoch-events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay import commands as c
from relay.clock import FakeClock
from relay.config import Settings
from relay.service import RelayService
from relay.store.archiver import thin
from relay.store.segment import SegmentReader

DAY_MS = 86_400_000
DEFAULT_ENTITIES = 100 * (5 + 1)  # the fleet: 100 hosts, 5 agents each, plus the hosts
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def folder_bytes(p: Path) -> int:
    if not p.exists():
        return 0
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def live_bytes(data: Path) -> int:
    return sum(f.stat().st_size for f in data.glob("relay.sqlite*") if f.is_file())


class Fleet:
    """The simulated hosts and agents, and what they do in one tick."""

    def __init__(self, hosts: int, agents: int, spawns: int, seed: int = 14) -> None:
        self.hosts = [f"h{i:03d}" for i in range(hosts)]
        self.agents = {h: [f"{h}-a{j}" for j in range(agents)] for h in self.hosts}
        self.spawns = spawns
        self.rng = random.Random(seed)
        self.silent: dict[str, int] = {}  # agent -> silent until (ms)
        self.running: dict[str, list[tuple[str, int]]] = {}  # host -> spawned (command, ends at)
        self.commands = 0
        self.heartbeats = 0

    def registrations(self, at: int) -> list[Any]:
        out: list[Any] = []
        for h in self.hosts:
            out.append(
                c.RegisterOrchestrator.of(
                    orchestrator_id=h, hostname=f"{h}.example", base_dir="/srv/work",
                    providers=["claude", "codex"], env_keys=[], meta={}, token_hash="0" * 64, at=at,
                )
            )
            out += [self.register(a, h, at) for a in self.agents[h]]
        return out

    @staticmethod
    def register(agent: str, host: str, at: int) -> c.RegisterAgent:
        return c.RegisterAgent(
            agent_id=agent, name=agent, label=None, tags=[], machine=host,
            capabilities=["code"], meta={}, at=at,
        )

    def report(self, host: str, at: int) -> c.ReportManagedAgents:
        """The host's managed agents changed (the host daemon reports only on change)."""
        agents = [
            {"agentId": f"{host}-{cid}", "provider": "claude", "status": "running", "label": None}
            for cid, _ in self.running.get(host, [])
        ]
        return c.ReportManagedAgents(orchestrator_id=host, agents=agents, at=at)

    def tick(self, service: RelayService, now: int, period_ms: int) -> list[Any]:
        """Every command of one heartbeat period starting at ``now`` (at-ordered)."""
        out: list[tuple[int, Any]] = []
        for h in self.hosts:
            at = now + self.rng.randrange(period_ms)
            out.append((at, c.HeartbeatOrchestrator(orchestrator_id=h, at=at)))
            for a in self.agents[h]:
                until = self.silent.get(a)
                if until is not None and now < until:
                    continue
                at = now + self.rng.randrange(period_ms)
                if until is not None:
                    del self.silent[a]
                    agent = service.rm.agents.get(a)
                    if agent is None or agent["status"] != "online":
                        out.append((at, self.register(a, h, at)))
                        continue
                out.append((at, c.HeartbeatAgent(agent_id=a, at=at)))
            day_frac = period_ms / DAY_MS
            if self.rng.random() < self.spawns * day_frac:
                # A spawn: the request (and its control message), the result, the
                # host's new managed-agent list; hours later the agent ends: a new list.
                at = now + self.rng.randrange(period_ms // 2)
                cid = f"cmd-{h}-{now}"
                out.append((at, c.RequestSpawn(
                    orchestrator_id=h, command_id=cid, provider="claude", cwd=None, label=None,
                    approval_mode="auto", prompt="fix the flaky test", requested_by="bench", at=at,
                )))
                done = at + period_ms // 2
                out.append((done, c.RecordCommandResult(
                    orchestrator_id=h, command_id=cid, status="done", error=None, agent_id=None, at=done,
                )))
                self.running.setdefault(h, []).append((cid, now + self.rng.randrange(1, 8) * 3_600_000))
                out.append((done + 1, self.report(h, done + 1)))
            ending = [r for r in self.running.get(h, []) if r[1] <= now]
            if ending:
                self.running[h] = [r for r in self.running[h] if r[1] > now]
                at = now + self.rng.randrange(period_ms)
                out.append((at, self.report(h, at)))
            if self.rng.random() < day_frac:  # once a day, an agent goes quiet for 10 minutes
                self.silent[self.rng.choice(self.agents[h])] = now + 600_000
        out.sort(key=lambda x: x[0])
        self.heartbeats += sum(1 for _, cmd in out if type(cmd).__name__.startswith("Heartbeat"))
        return [cmd for _, cmd in out]


async def run_day(
    service: RelayService, clock: FakeClock, fleet: Fleet, day_end: int, period_ms: int
) -> None:
    while clock.now < day_end:
        now = clock.now
        cmds = fleet.tick(service, now, period_ms)
        for lo in range(0, len(cmds), 512):
            part = cmds[lo : lo + 512]
            clock.now = max(clock.now, max(getattr(x, "at", now) for x in part))
            results = await asyncio.gather(*(service.execute(x) for x in part), return_exceptions=True)
            fleet.commands += len(part)
            for r in results:
                if isinstance(r, Exception) and type(r).__name__ != "NotFoundError":
                    raise r
        clock.now = now + period_ms
        if (clock.now // 60_000) != (now // 60_000):
            await service.reap(clock.now)


def grown(snapshots: list[Any], day: int, top: int = 12) -> None:
    """Print what the Python heap gained since the first day's end, by allocating line
    (``--tracemalloc``): where memory that grows per simulated day comes from."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen*>"))
    )
    snapshots.append(snap)
    current, _ = tracemalloc.get_traced_memory()
    print(f"# day {day}: Python heap traced {current / 1e6:.1f} MB", flush=True)
    if len(snapshots) < 2:
        return
    for stat in snap.compare_to(snapshots[0], "traceback")[:top]:
        frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in list(stat.traceback)[:4])
        print(f"#   {stat.size_diff / 1e6:+.2f} MB {stat.count_diff:+,} blocks  {frames}", flush=True)


def verify_seconds(data: Path) -> tuple[float, str]:
    """``relay audit verify`` (incremental) in a child process, so this process's RSS
    stays the relay's own; the time includes the interpreter's start (~0.3 s)."""
    import subprocess

    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "relay", "audit", "--data", str(data), "verify"],
        capture_output=True, text=True, check=False,
    )
    seconds = time.perf_counter() - t0
    text = out.stdout.strip().splitlines()
    return seconds, ("ok" if out.returncode == 0 else "FAILED: " + " / ".join(text[:3]))


def seg_bytes(entry: Any) -> int:
    """A segment's bytes on disk (SQLite archives: one file per segment)."""
    return Path(entry.key).stat().st_size


def thinned_in_child(data: Path, seen: set[str]) -> tuple[int, int, int]:
    """``thinned_bytes`` in a child process: thinning a day of segments in memory is the
    bench's own measurement, and its peak must not stay in this process's RSS (the
    allocator keeps freed memory), which is the relay's."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        tb, fb, n, now_seen = pool.submit(_thinned_child, str(data), sorted(seen)).result()
    seen.update(now_seen)
    return tb, fb, n


def _thinned_child(data: str, seen: list[str]) -> tuple[int, int, int, list[str]]:
    s = set(seen)
    tb, fb, n = thinned_bytes(Path(data), s)
    return tb, fb, n, sorted(s)


def thinned_bytes(data: Path, seen: set[str]) -> tuple[int, int, int]:
    """(bytes thinned, bytes full, epochs) of the full segments not measured before."""
    thin_total = full_total = n = 0
    for p in sorted((data / "archive").glob("epoch-*.full")):
        if p.name in seen:
            continue
        seen.add(p.name)
        raw = p.read_bytes()
        thin_total += len(thin(SegmentReader(raw)))
        full_total += len(raw)
        n += 1
    return thin_total, full_total, n


async def main_async(args: argparse.Namespace) -> None:
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="relay-longrun-"))
    if args.data and data.exists() and not args.resume:
        shutil.rmtree(data)
    clock = FakeClock(START)
    settings = Settings(
        data_dir=data,
        epoch_events=args.epoch_events,
        keep_heartbeats=args.keep_heartbeats,
        seal_every=args.seal_every,
        keep_settled=args.keep_settled,
    )
    fleet = Fleet(args.hosts, args.agents, args.spawns)
    entities = args.hosts * (args.agents + 1)
    period_ms = args.heartbeat * 1000
    print(f"# relay longrun: {args.hosts} hosts x {args.agents} agents ({entities} entities), "
          f"heartbeat {args.heartbeat} s, {args.days} days, epochs of {args.epoch_events:,} events, "
          f"keep-heartbeats {args.keep_heartbeats}, keep-settled {args.keep_settled}; data in {data}")
    print(f"# {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
    service = RelayService(settings, clock=clock)
    await service.start(run_reaper=False)
    await asyncio.gather(*(service.execute(x) for x in fleet.registrations(clock.now)))
    print(f"# RSS after start and registrations: {rss_mb():.0f} MB", flush=True)
    header = ("day", "events", "hb/day", "live MB", "archive MB", "total MB", "B/ev arch",
              "thin B/ent/day", "RSS MB", "start s", "verify s", "write s")
    print(" | ".join(header))
    seen: set[str] = set()
    snapshots: list[Any] = []
    if args.tracemalloc:
        tracemalloc.start(3)
    figures: list[dict[str, float]] = []
    thin_sum = full_sum = 0
    for day in range(1, args.days + 1):
        t0 = time.perf_counter()
        hb0 = fleet.heartbeats
        await run_day(service, clock, fleet, START + day * DAY_MS, period_ms)
        write_s = time.perf_counter() - t0
        assert service.archiver is not None
        before_archiving = rss_mb()
        await asyncio.get_running_loop().run_in_executor(None, service.archiver.run_now)
        rss = rss_mb()  # the relay's own: before this process measures anything else
        if args.trim_diagnostics:
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            print(f"# day {day}: RSS {before_archiving:.0f} MB at the day's end, {rss:.0f} MB after "
                  f"archiving; after gc and malloc_trim(0) {rss_mb():.0f} MB", flush=True)
        if args.tracemalloc:
            grown(snapshots, day)
        if args.tracemalloc or args.trim_diagnostics:
            app = service.app
            print(f"# day {day}: read models hold {len(service.rm.commands)} commands, "
                  f"{len(service.rm.messages.by_id)} messages, {len(service.rm.entities)} entities; "
                  f"the writer {len(app.live) if app else 0} live aggregates", flush=True)
        await service.stop()
        t1 = time.perf_counter()
        service = RelayService(settings, clock=clock)
        await service.start(run_reaper=False)
        start_s = time.perf_counter() - t1
        verify_s, verdict = verify_seconds(data)
        archive_b = folder_bytes(data / "archive")
        entries = service.archive.entries()
        full_entries = [e for e in entries if e.kind == "full"]
        thin_entries = [e for e in entries if e.kind == "thin"]
        events_per_day = max(1.0, service.rm.position / day)
        if thin_entries:
            # Thinned inside the run (--keep-heartbeats shorter than the run): the
            # segments the relay itself thinned, per simulated day of their events.
            thin_b = sum(seg_bytes(e) for e in thin_entries)
            thin_days = sum(e.last - e.first + 1 for e in thin_entries) / events_per_day
            thin_per_entity_day = thin_b / entities / thin_days
        elif settings.keep_heartbeats_ms is not None and settings.keep_heartbeats_ms < args.days * DAY_MS:
            thin_per_entity_day = 0.0  # the relay will thin inside this run: measured then
        else:
            # Not yet: each day's full segments thinned in memory, as --keep-heartbeats would.
            tb, fb, _ = thinned_in_child(data, seen)
            thin_sum += tb
            full_sum += fb
            measured_days = sum(e.last - e.first + 1 for e in full_entries) / events_per_day
            thin_per_entity_day = thin_sum / entities / measured_days if measured_days else 0.0
        full_events = sum(e.last - e.first + 1 for e in full_entries)
        # Bytes per event of the segments still at full resolution (thinned ones excluded).
        per_event = sum(seg_bytes(e) for e in full_entries) / full_events if full_events else 0.0
        row = {
            "day": day, "events": service.rm.position, "hb": fleet.heartbeats - hb0,
            "live": live_bytes(data), "archive": archive_b, "total": folder_bytes(data),
            "per_event": per_event, "thin": thin_per_entity_day, "rss": rss,
            "start": start_s, "verify": verify_s, "write": write_s,
        }
        figures.append(row)
        print(f"{day} | {row['events']:,} | {row['hb']:,} | {row['live'] / 1e6:.1f} | "
              f"{archive_b / 1e6:.2f} | "
              f"{row['total'] / 1e6:.1f} | {per_event:.2f} | {thin_per_entity_day:.0f} | {row['rss']:.0f} | "
              f"{start_s:.2f} | {verify_s:.2f} ({verdict}) | {write_s:.0f}", flush=True)
    await service.stop()
    project(figures, entities, args)
    if not args.data and not args.keep:
        shutil.rmtree(data, ignore_errors=True)


def project(figures: list[dict[str, float]], entities: int, args: argparse.Namespace) -> None:
    """A year of the default fleet with default retention, from the measured rates."""
    last = figures[-1]
    hb_day = figures[-1]["hb"]
    per_event = last["per_event"]
    thin_day_entity = last["thin"]
    full_days, thin_days = 30, 335
    default_hb_day = DEFAULT_ENTITIES * 86_400 // args.heartbeat
    full_b = full_days * default_hb_day * per_event
    thin_b = thin_days * DEFAULT_ENTITIES * thin_day_entity
    live_per_event = last["live"] / max(1, args.epoch_events)
    live_b = 2 * 1_000_000 * live_per_event  # default epochs: the open one and one being archived
    print()
    print(f"# measured on this run ({entities} entities, {hb_day:,} heartbeats on the last day):")
    print(f"#   archived at full resolution: {per_event:.2f} bytes per event (target <= 8)")
    print(f"#   thinned: {thin_day_entity:.0f} bytes per entity per day (target <= 1024)")
    print(f"#   RSS last/first day: {last['rss']:.0f}/{figures[0]['rss']:.0f} MB = "
          f"{last['rss'] / figures[0]['rss']:.2f}x (target <= 1.1x)")
    print(f"#   start-up: max {max(f['start'] for f in figures):.2f} s (target <= 1 s)")
    print(f"#   incremental verify of one day: max {max(f['verify'] for f in figures):.2f} s for "
          f"{hb_day:,} heartbeats a day; the default fleet's day is {default_hb_day / hb_day:.1f}x that")
    print(f"# a year of the default fleet ({DEFAULT_ENTITIES} entities, {default_hb_day:,} heartbeats/day), "
          "default retention (30 days whole, then thinned):")
    print(f"#   full resolution: {full_days} d x {default_hb_day:,} x {per_event:.2f} B = "
          f"{full_b / 1e9:.2f} GB")
    print(f"#   thinned: {thin_days} d x {DEFAULT_ENTITIES} entities x {thin_day_entity:.0f} B = "
          f"{thin_b / 1e9:.3f} GB")
    print(f"#   live store (epochs of 1,000,000; open + one being archived): 2 x 1,000,000 x "
          f"{live_per_event:.0f} B = {live_b / 1e9:.2f} GB")
    print(f"#   total: {(full_b + thin_b + live_b) / 1e9:.2f} GB (target <= 5 GB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--agents", type=int, default=5, help="agents per host")
    p.add_argument("--heartbeat", type=int, default=30, help="seconds between heartbeats")
    p.add_argument("--spawns", type=float, default=4, help="spawns (and results) per host per day")
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--epoch-events", type=int, default=200_000, help="sized to fit the machine")
    p.add_argument("--keep-heartbeats", default="30d")
    p.add_argument("--keep-settled", default="7d", help="settled commands and messages leave memory")
    p.add_argument("--trim-diagnostics", action="store_true",
                   help="also print RSS after gc and glibc's malloc_trim(0): memory the allocator kept")
    p.add_argument("--tracemalloc", action="store_true",
                   help="print the Python heap's growth since day 1, by allocating line (slow)")
    p.add_argument("--seal-every", type=int, default=1_000)
    p.add_argument("--data", default=None, help="data folder (default: a temporary one, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
