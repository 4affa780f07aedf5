"""Build big logs fast, through the relay's own application and the library's recorder.

Going through HTTP would take minutes for a million events; these write the
same events (the real event classes, encoded by the application's own
mapper and transcoder) in large transactions, straight into a data folder
that a relay is then started on.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from relay import commands as c
from relay.application import RelayApp
from relay.config import Settings
from relay.domain.orchestrator import Orchestrator
from relay.store import store_env


def open_app(data_dir: Path) -> RelayApp:
    return RelayApp(env=store_env(Settings(data_dir=data_dir)))


def _register(app: RelayApp, ids: list[str], at: int) -> list[Any]:
    aggs: list[Any] = []
    for i, oid in enumerate(ids):
        _, touched = app.execute(
            c.RegisterOrchestrator.of(
                orchestrator_id=oid,
                hostname=f"host-{i:05d}",
                base_dir="/srv/work",
                providers=["claude", "codex"],
                env_keys=[],
                meta={},
                token_hash="0" * 64,
                at=at,
            )
        )
        aggs.extend(touched)
    app.save(*aggs)
    return aggs


def build_long_stream(data_dir: Path, oid: str, heartbeats: int, batch: int = 5_000) -> float:
    """One orchestrator with ``heartbeats`` heartbeats, through the application's use case.

    Each batch is one ``save()`` of one aggregate with many pending events, so
    the library also takes its periodic snapshots as it would live. Returns
    the seconds it took.
    """
    t0 = time.perf_counter()
    app = open_app(data_dir)
    try:
        now = int(time.time() * 1000)
        start = now - heartbeats
        _register(app, [oid], start)
        done = 0
        while done < heartbeats:
            n = min(batch, heartbeats - done)
            agg = None
            for k in range(n):
                _, touched = app.execute(c.HeartbeatOrchestrator(oid, start + done + k + 1))
                agg = touched[0]
            app.save(agg)
            done += n
    finally:
        app.close()
    return time.perf_counter() - t0


def build_big_log(data_dir: Path, events: int, orchestrators: int = 1_000, batch: int = 20_000) -> float:
    """A log of ``events`` events: registrations, then heartbeats round-robin.

    Heartbeats are instances of the real event class with consecutive versions
    per orchestrator, encoded by the application's mapper and inserted by the
    library's recorder, ``batch`` per transaction: what ``save()`` would have
    written, without paying for a million aggregate method calls. Returns the
    seconds it took.
    """
    t0 = time.perf_counter()
    app = open_app(data_dir)
    try:
        now = int(time.time() * 1000)
        ids = [f"o{i}" for i in range(orchestrators)]
        aggs = _register(app, ids, now - events)
        versions = [a.version for a in aggs]
        originators = [a.id for a in aggs]
        heartbeat = Orchestrator.HeartbeatReceived  # type: ignore[attr-defined]
        to_stored = app.mapper.to_stored_event
        ts0 = datetime.now(UTC) - timedelta(milliseconds=events)
        left = events - len(aggs)
        k = 0
        while left > 0:
            n = min(batch, left)
            stored = []
            for _ in range(n):
                j = k % orchestrators
                versions[j] += 1
                k += 1
                ev = heartbeat(
                    originator_id=originators[j],
                    originator_version=versions[j],
                    timestamp=ts0 + timedelta(milliseconds=k),
                    at=now - events + k,
                )
                stored.append(to_stored(ev))
            app.recorder.insert_events(stored)
            left -= n
    finally:
        app.close()
    return time.perf_counter() - t0


def append_heartbeats(data_dir: Path, events: int, prefix: str, batch: int = 1_000) -> float:
    """Append ``events`` events to an existing log: 10 new orchestrators, then their heartbeats.

    New orchestrators, so nothing has to be loaded first. Returns the seconds it took.
    """
    t0 = time.perf_counter()
    app = open_app(data_dir)
    try:
        now = int(time.time() * 1000)
        ids = [f"{prefix}-{i}" for i in range(min(10, events))]
        _register(app, ids, now - events)
        left = events - len(ids)
        k = 0
        while left > 0:
            n = min(batch, left)
            touched: dict[Any, Any] = {}
            for _ in range(n):
                _, aggs = app.execute(c.HeartbeatOrchestrator(ids[k % len(ids)], now - events + k))
                touched[aggs[0].id] = aggs[0]
                k += 1
            app.save(*touched.values())
            left -= n
    finally:
        app.close()
    return time.perf_counter() - t0
