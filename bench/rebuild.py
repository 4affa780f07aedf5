"""Replay benchmark (issue 4): rebuild, export and verify over a long log. Not a test.

Run from the repository root (about 4 minutes on the 2-core machine, most of
it building the log)::

    .venv/bin/python bench/rebuild.py                    # 1,000,000 events, 3 runs
    .venv/bin/python bench/rebuild.py --events 200000 --runs 1
    .venv/bin/python bench/rebuild.py --data /tmp/big    # reuse (or keep) a built log

The log is built once like bench/builders.py's (1,000 orchestrators, then
heartbeats round-robin, the real event classes encoded by the relay's own
mapper), sealed every 1,000 events by the relay's own sealer. Each
measurement runs in a fresh child process that reports its own peak RSS
(VmHWM):

raw      the yardstick, in the same run: the library reading the whole log
         (``select_notifications``) and decoding every event
         (``mapper.to_domain_event``), nothing else.
rebuild  the read models from position 0 to the head, as ``state --at`` and
         ``?at=`` do (relay.audit.replay over the read-only SQLite reader).
         Targets: >= 100,000 events/s (about half the raw rate), peak RSS
         <= 300 MB (memory follows live entities, not log length).
export   ``relay audit export --format jsonl`` to /dev/null (the CLI's own code,
         timed from its call; interpreter start-up excluded).
verify   ``relay audit verify`` (positions, versions, hash chain, fold,
         checkpoint), timed the same way.

Every figure is the median of ``--runs`` runs; the ratio to raw is taken within
each run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from harness import REPO, load_average, machine, median


def peak_kb() -> int:
    """This process's peak RSS (VmHWM: unlike ``ru_maxrss`` it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child(what: str, data: Path) -> None:
    """Runs in the measured process; prints {"events", "seconds", "peakKB"} as JSON on stderr."""
    from relay.audit.log import SqliteLog
    from relay.audit.replay import Replayer

    if what in ("export", "verify"):
        from relay.cli import main as relay_main

        with SqliteLog(data) as log:
            n = log.head()
        argv = ["audit", "--data", str(data), what]
        if what == "export":
            argv += ["--output", os.devnull]
        t0 = time.perf_counter()
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                code = relay_main(argv)
            finally:
                sys.stdout = stdout
        seconds = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"relay audit {what} exited {code}")
    elif what == "raw":
        from builders import open_app

        app = open_app(data)
        t0 = time.perf_counter()
        n = 0
        after = 0
        decode = app.mapper.to_domain_event
        while True:
            batch = app.recorder.select_notifications(start=after, limit=5_000, inclusive_of_start=False)
            if not batch:
                break
            for note in batch:
                decode(note)
            n += len(batch)
            after = batch[-1].id
        seconds = time.perf_counter() - t0
        app.close()
    elif what == "rebuild":
        log = SqliteLog(data)
        head = log.head()
        t0 = time.perf_counter()
        rm = Replayer(log, every=10**12).state_at(head)  # no anchors: the bare fold
        seconds = time.perf_counter() - t0
        n = head
        assert rm.position == head
    else:
        raise SystemExit(f"unknown child {what!r}")
    line = {"events": n, "seconds": seconds, "peakKB": peak_kb()}
    print(orjson.dumps(line).decode(), file=sys.stderr, flush=True)


def build_sealed_log(data: Path, events: int, orchestrators: int = 1_000, every: int = 1_000) -> float:
    """Like bench/builders.py's big log (registrations, then heartbeats round-robin,
    the real event classes through the relay's mapper), with a seal every
    ``every`` events written by the relay's own sealer in between, as a live
    relay would: so ``verify`` meets seals where it would in real life."""
    from datetime import UTC, datetime, timedelta

    from builders import open_app

    from relay import commands as c
    from relay.audit.sealer import Sealer
    from relay.clock import SystemClock
    from relay.domain.orchestrator import Orchestrator

    t0 = time.perf_counter()
    app = open_app(data)
    try:
        now = int(time.time() * 1000)
        aggs = []
        for i in range(orchestrators):
            _, touched = app.execute(
                c.RegisterOrchestrator.of(
                    orchestrator_id=f"o{i}", hostname=f"host-{i:05d}", base_dir="/srv/work",
                    providers=["claude", "codex"], env_keys=[], meta={}, token_hash="0" * 64,
                    at=now - events,
                )
            )
            aggs.extend(touched)
        app.save(*aggs)
        sealer = Sealer.load(app, every, SystemClock())
        versions = [a.version for a in aggs]
        heartbeat = Orchestrator.HeartbeatReceived  # type: ignore[attr-defined]
        ts0 = datetime.now(UTC) - timedelta(milliseconds=events)
        k = 0
        while app.recorder.max_notification_id() < events:
            stored = []
            for _ in range(every):
                j = k % orchestrators
                versions[j] += 1
                k += 1
                ev = heartbeat(
                    originator_id=aggs[j].id,
                    originator_version=versions[j],
                    timestamp=ts0 + timedelta(milliseconds=k),
                    at=now - events + k,
                )
                stored.append(app.mapper.to_stored_event(ev))
            app.recorder.insert_events(stored)
            sealer.head = app.recorder.max_notification_id()
            sealer.seal(app)
    finally:
        app.close()
    return time.perf_counter() - t0


def one_run(data: Path) -> dict[str, Any]:
    r: dict[str, Any] = {}
    for what in ("raw", "rebuild", "export", "verify"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", what, str(data)],
            capture_output=True,
            cwd=REPO,
            check=True,
        )
        got = orjson.loads(proc.stderr.splitlines()[-1])
        r[what] = got["events"] / got["seconds"]
        r[what + "RSS"] = got["peakKB"] / 1024
    r["ratio"] = r["rebuild"] / r["raw"]
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--data", type=Path, default=None, help="a data folder to build into or reuse")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="relay-rebuild-"))
        data = tmp / "data"
    try:
        if not (data / "relay.sqlite").exists():
            print(f"# building a {args.events:,}-event log in {data} ...", flush=True)
            seconds = build_sealed_log(data, args.events)
            print(f"# built in {seconds:.0f} s", flush=True)
        from relay.audit.log import SqliteLog

        with SqliteLog(data) as log:
            events = log.head()
        print(f"# replay of a {events:,}-event log · {machine()} · load {load_average()}")
        runs = [one_run(data) for _ in range(args.runs)]
        m = {k: median([r[k] for r in runs]) for k in runs[0]}
        print(f"# median of {args.runs} run(s)")
        print()
        print("| what | events/s | peak RSS MB |")
        print("|---|---|---|")
        print(f"| raw library read + decode (baseline) | {m['raw']:,.0f} | {m['rawRSS']:.0f} |")
        print(f"| rebuild read models from 0 | {m['rebuild']:,.0f} ({m['ratio']:.2f}x raw) "
              f"| {m['rebuildRSS']:.0f} |")
        print(f"| `relay audit export --format jsonl` | {m['export']:,.0f} "
              f"| {m['exportRSS']:.0f} |")
        print(f"| `relay audit verify` | {m['verify']:,.0f} | {m['verifyRSS']:.0f} |")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
