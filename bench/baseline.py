"""The yardstick: the library's own rate, one heartbeat per ``save()``.

A plain ``eventsourcing`` Application (its own JSON transcoder, no relay code)
on the same SQLite settings as the relay (the library's SQLite module: WAL,
``synchronous=FULL``, 5 s lock timeout), in a file beside the relay's, with
every aggregate already in memory: the best a request-per-transaction design
could do on this disk, with no HTTP in front of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Beacon(Aggregate):
    """Something that heartbeats; the event carries one int, like the relay's."""

    @event("Registered")
    def __init__(self, name: str, at: int) -> None:
        self.name = name
        self.last_seen = at

    @event("HeartbeatReceived")
    def heartbeat(self, at: int) -> None:
        self.last_seen = at


def one_per_save(
    data_dir: Path, seconds: float, aggregates: int = 1_000, max_saves: int = 500_000
) -> dict[str, Any]:
    """Heartbeat aggregates round-robin, one ``save()`` each, for ``seconds``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    app: Application[Any] = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(data_dir / "baseline.sqlite"),
            "SQLITE_LOCK_TIMEOUT": "5",
        }
    )
    try:
        now = int(time.time() * 1000)
        beacons = [Beacon(f"b{i}", now) for i in range(aggregates)]
        app.save(*beacons)
        latencies: list[float] = []
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while n < max_saves:
            b = beacons[n % aggregates]
            s = time.perf_counter()
            b.heartbeat(now + n)
            app.save(b)
            e = time.perf_counter()
            latencies.append(e - s)
            n += 1
            if e >= deadline:
                break
        elapsed = time.perf_counter() - t0
    finally:
        app.close()
    latencies.sort()
    return {
        "saves": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }
