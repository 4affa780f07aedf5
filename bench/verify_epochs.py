"""Verify over epochs (issue 14): a full run, then an incremental one after one more epoch. Not a test.

Builds a log the way bench/rebuild.py does (registrations, then heartbeats
round-robin through the relay's mapper, straight into the recorder), with the
relay's own rolling sealer and epoch sealer run between inserts as the writer
thread would. Then, in this order:

full         ``relay audit verify --full``: every event, every seal, every
             epoch root, the read models rebuilt from position 0;
incremental  one more epoch is written, then ``relay audit verify``: the
             epochs proven by the full run are trusted by root, only the new
             epoch and the open one are read.

    .venv/bin/python bench/verify_epochs.py                     # 300,000 events, epochs of 50,000
    .venv/bin/python bench/verify_epochs.py --events 1000000 --epoch 100000
    .venv/bin/python bench/verify_epochs.py --events 1730000 --epoch 1730000 --archived   # one 100x5 day

``--archived``: before the incremental run, every sealed epoch is moved to
the archive (as the relay's archiver does), so the new epoch is read from
its segment, not the live store. To compare with another version of relay
in the same session, run this script with ``PYTHONPATH`` naming that
version's checkout (e.g. an ``git archive`` of the base commit).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from builders import open_app

from relay import commands as c
from relay.audit.epochs import EpochSealer
from relay.audit.sealer import Sealer
from relay.cli import main as relay_main
from relay.clock import SystemClock
from relay.domain.orchestrator import Orchestrator


def build(data: Path, events: int, epoch: int, orchestrators: int = 1_000, step: int = 1_000) -> float:
    """Write heartbeats until the log holds ``events``, sealing as the writer would."""
    t0 = time.perf_counter()
    app = open_app(data)
    try:
        now = int(time.time() * 1000)
        head = app.recorder.max_notification_id() or 0
        aggs = []
        for i in range(orchestrators):
            oid = f"o{i}"
            try:
                aggs.append(app.repository.get(Orchestrator.create_id(oid)))
            except Exception:
                _, touched = app.execute(
                    c.RegisterOrchestrator.of(
                        orchestrator_id=oid, hostname=f"host-{i:05d}", base_dir="/srv/work",
                        providers=["claude"], env_keys=[], meta={}, token_hash="0" * 64, at=now - events,
                    )
                )
                app.save(*touched)
                aggs.extend(touched)
        clock = SystemClock()
        sealer = Sealer.load(app, 1_000, clock)
        epochs = EpochSealer.load(app, epoch, 10**9, clock)
        versions = [a.version for a in aggs]
        heartbeat = Orchestrator.HeartbeatReceived  # type: ignore[attr-defined]
        ts0 = datetime.now(UTC) - timedelta(milliseconds=events)
        k = 0
        while (head := app.recorder.max_notification_id()) < events:
            stored = []
            for _ in range(step):
                j = k % orchestrators
                versions[j] += 1
                k += 1
                ev = heartbeat(
                    originator_id=aggs[j].id, originator_version=versions[j],
                    timestamp=ts0 + timedelta(milliseconds=k), at=now - events + k,
                )
                stored.append(app.mapper.to_stored_event(ev))
            app.recorder.insert_events(stored)
            head = app.recorder.max_notification_id()
            for s in (sealer, epochs):
                s.head = head
                s.seal(app)
    finally:
        app.close()
    return time.perf_counter() - t0


def archive_all(data: Path) -> None:
    """Move every sealed epoch to the archive, as the relay's archiver would."""
    from relay.audit.epochs import sealed_epochs
    from relay.store.archive import open_archive
    from relay.store.archiver import Archiver

    app = open_app(data)
    try:
        Archiver(app, open_archive(app, data)).run(sealed_epochs(app.recorder))
    finally:
        app.close()


def verify(data: Path, *args: str) -> tuple[float, str]:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = relay_main(["audit", "--data", str(data), "verify", *args])
    seconds = time.perf_counter() - t0
    text = out.getvalue()
    if code != 0:
        raise SystemExit(f"verify failed:\n{text}")
    return seconds, text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--epoch", type=int, default=50_000)
    p.add_argument("--archived", action="store_true",
                   help="archive the sealed epochs before the incremental run")
    a = p.parse_args()
    import relay

    print(f"# relay from {Path(relay.__file__).parent}; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="relay-verify-") as tmp:
        data = Path(tmp) / "data"
        built = build(data, a.events, a.epoch)
        print(f"building {a.events:,} events in epochs of {a.epoch:,}: {built:.1f} s")
        seconds, text = verify(data, "--full")
        read = int(text.split("OK: ")[1].split(" ")[0])
        print(f"full verify: {read:,} events in {seconds:.2f} s = {read / seconds:,.0f} events/s")
        build(data, a.events + a.epoch, a.epoch)
        if a.archived:
            archive_all(data)
        seconds, text = verify(data)
        read = int(text.split("OK: ")[1].split(" ")[0])
        print(f"incremental verify after one more epoch: {read:,} events in {seconds:.2f} s "
              f"= {read / seconds:,.0f} events/s")
        print(text.strip().splitlines()[1].strip())


if __name__ == "__main__":
    main()
