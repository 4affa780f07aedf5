"""The relay as the HTTP layer sees it: start, stop, execute, reap, read.

Wires the application, the writer thread, the read models and the tail
follower together, and owns the reaper's schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any
from uuid import UUID

from attrs import evolve, frozen
from eventsourcing.persistence import PersistenceError

from relay import __version__, memory
from relay import commands as c
from relay.application import RelayApp
from relay.audit.log import AppLog
from relay.clock import Clock, SystemClock
from relay.config import Settings
from relay.domain.errors import StoreUnavailableError
from relay.domain.outage import PassDecision, ReapBrake
from relay.domain.rules import is_silent
from relay.metrics import Metrics
from relay.projections.follower import TailFollower, load_read_models
from relay.projections.messages import expired_claims, settled_to_forget
from relay.projections.readmodels import ReadModels
from relay.store import store_env
from relay.store.archive import Archive, open_archive
from relay.store.archiver import ArchiveWorker, start_archiver
from relay.store.lock import DataFolderLock
from relay.store.reader import LogReader
from relay.writer import Writer

log = logging.getLogger(__name__)

ReapHook = Callable[[], Awaitable[None]]


class RelayService:
    """One relay process: its log, its read models and its writer."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.app: RelayApp | None = None
        self.rm = ReadModels()
        self.tail: TailFollower | None = None
        self.writer: Writer | None = None
        self.started_at = 0
        self.loaded_how = ""
        self.load_seconds = 0.0
        self.last_reap_at: int | None = None
        self.reap_hook: ReapHook | None = None  # tests widen the reaper's race window
        self._reaper: asyncio.Task[None] | None = None
        self.metrics = Metrics(self)
        self.listener: Any = None  # PostgreSQL: the LISTEN subscription (relay.store.postgres)
        self._store_probe: asyncio.Future[int] | None = None
        self.lock = DataFolderLock(self.data_dir)
        # The archive (relay.store.archive) and the log read through it: every reader uses it.
        self.archive: Archive | None = None
        self.reader: LogReader | None = None
        self.archiver: ArchiveWorker | None = None
        self.notifier: Any = None  # relay.notify.Notifier when --notify-url is given (ADR 0027)

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    async def start(self, run_reaper: bool = True) -> None:
        """Take the data folder, open the store, load the read models, start the
        writer and the reaper. Raises ``DataFolderInUseError`` while another
        process holds the folder (ADR 0018)."""
        self.lock.acquire()  # first: nothing is read or written before the folder is ours
        try:
            await self._start(run_reaper)
        except BaseException:
            await self._stop_after_failed_start()
            raise

    async def _stop_after_failed_start(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.writer.stop)
            if self.app is not None:
                self.app.close()
        self.lock.release()

    async def _start(self, run_reaper: bool) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        memory.tune()  # archiving's big buffers go back to the system when freed (relay/memory.py)
        env = store_env(self.settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.app = await loop.run_in_executor(None, RelayApp, env)
        self.archive = await loop.run_in_executor(None, open_archive, self.app, self.data_dir)
        self.reader = LogReader(AppLog(self.app), self.archive)
        self.rm, self.loaded_how = await loop.run_in_executor(
            None, load_read_models, self.app, self.data_dir, self.reader.folding()
        )
        self.load_seconds = time.perf_counter() - t0
        self.tail = TailFollower(
            self.app, self.rm, self.data_dir, self.settings.checkpoint_every
        )
        self.tail.reader = self.reader.folding()
        self.writer = Writer(self.app, loop, self.tail.on_committed)
        self.writer.observe_commit = self.metrics.observe_commit
        self.app.known_version = self._known_version
        self.app.keep_settled_ms = self.settings.keep_settled_ms
        if self.settings.seal_every > 0:
            from relay.audit.sealer import Sealer

            self.writer.sealer = await loop.run_in_executor(
                None, Sealer.load, self.app, self.settings.seal_every, self.clock
            )
        if self.settings.epoch_events > 0:
            from relay.audit.epochs import EpochSealer

            self.writer.epochs = await loop.run_in_executor(
                None,
                EpochSealer.load,
                self.app,
                self.settings.epoch_events,
                self.settings.epoch_seconds,
                self.clock,
            )
        self.writer.start()
        if self.settings.epoch_events > 0 and self.settings.archive:
            from relay.audit.epochs import sealed_epochs

            self.archiver = start_archiver(self, sealed_epochs)
        if self.settings.store == "postgres":
            from relay.store.postgres import start_listener

            self.listener = await start_listener(self)
        # Grace: nobody is reaped for silence that overlapped the relay's own downtime.
        self.started_at = self.clock.now_ms()
        if run_reaper:
            self._reaper = loop.create_task(self._reap_forever())
        if self.settings.notify_urls and self.settings.notify_secret:
            from relay.notify import Notifier

            self.notifier = Notifier(
                self, self.settings.notify_urls, self.settings.notify_secret,
                retry_max=self.settings.notify_retry_max,
            )
            await self.notifier.start()
        log.info(
            "read models at position %d (%s) in %.3f s",
            self.rm.position,
            self.loaded_how,
            self.load_seconds,
        )

    async def stop(self) -> None:
        """Stop reaping, drain the writer, and leave a checkpoint for a fast restart."""
        try:
            if self.notifier is not None:
                await self.notifier.stop()
            if self.listener is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.listener.stop)
            if self._reaper is not None:
                self._reaper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reaper
            if self.archiver is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.archiver.stop)
            if self.writer is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.writer.stop)
                await asyncio.sleep(0)  # let the writer's last hand-over run
            if self.tail is not None:
                self.tail.checkpoint_now()
            if self.app is not None:
                self.app.close()
        finally:
            self.lock.release()  # the folder is free once this relay has let go of it

    # -- writes ----------------------------------------------------------------

    async def execute(self, cmd: c.Command) -> Any:
        """Run ``cmd``; returns once it is durable and visible in the read models."""
        assert self.writer is not None, "the relay is not started"
        t0 = time.perf_counter()
        try:
            return await self.writer.submit(cmd)
        finally:
            self.metrics.observe_write(cmd, time.perf_counter() - t0)

    def _known_version(self, aggregate_id: UUID) -> int | None:
        """The newest version of an aggregate in the read models (called on the writer thread)."""
        entity = self.rm.entities.get(aggregate_id.hex)
        return entity[2] if entity is not None else None

    def now(self) -> int:
        return self.clock.now_ms()

    # -- the reaper --------------------------------------------------------------

    def grace_from(self) -> int:
        """Silence before this moment never counts (``grace_start``)."""
        return grace_start(self.rm, self.started_at)

    def reap_candidates(self, now: int) -> list[c.ReapCandidate]:
        """Who looks stale in the read model at ``now`` (the decision; no write)."""
        return reap_candidates(self.rm, now, self.settings.stale_after_ms, self.grace_from())

    async def reap(self, now: int | None = None, force: bool = False) -> c.ReapResult:
        """One pass of the reaper (``reap_pass``), each of its commands through the writer.

        Decided from the read model, then recorded; a heartbeat in between wins
        (``reap_hook`` is awaited in that window, for the tests that race it).
        """
        now = self.clock.now_ms() if now is None else now
        self.last_reap_at = now
        steps = reap_pass(self.rm, now, self.started_at, self.settings, force)
        reply: Any = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                result: c.ReapResult = done.value
                break
            if isinstance(step, RaceWindow):
                if self.reap_hook is not None:
                    await self.reap_hook()
                reply = None
            else:
                reply = await self.execute(step)
        if result.expired_command_ids:
            log.info("expired commands %s", result.expired_command_ids)
        if result.released_message_ids:
            log.info("released expired claims on messages %s", result.released_message_ids)
        if result.reaped_agent_ids or result.reaped_orchestrator_ids:
            log.info(
                "reaped agents %s and orchestrators %s",
                result.reaped_agent_ids,
                result.reaped_orchestrator_ids,
            )
        return result

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_every)
            try:
                await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reap failed; will try again", exc_info=True)

    # -- reads -----------------------------------------------------------------

    async def read_log(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Raw domain events after ``after``, oldest first, and the position to ask next.

        Read through the archive (relay.store.reader): archived positions first,
        then live ones, with no seam. Over a thinned stretch the positions have
        gaps; ``read_intervals`` gives the heartbeats that stood there.
        """
        assert self.app is not None and self.reader is not None
        app, reader = self.app, self.reader
        loop = asyncio.get_running_loop()
        try:
            notes = await loop.run_in_executor(None, reader.select, after, limit)
        except PersistenceError as e:
            raise StoreUnavailableError(
                f"the event store cannot be read right now ({type(e).__name__}); retry later"
            ) from e
        events = [self.describe(n.id, app.mapper.to_domain_event(n)) for n in notes]
        nxt = notes[-1].id if notes else after
        return events, nxt

    async def read_intervals(self, after: int, upto: int) -> list[dict[str, Any]]:
        """Thinned heartbeat runs that start in ``(after, upto]`` (GET /api/log)."""
        assert self.reader is not None
        reader = self.reader
        found = await asyncio.get_running_loop().run_in_executor(None, reader.intervals, after, upto)
        out = []
        for iv in found:
            entity = self.rm.entity_of(UUID(iv.originator_id))
            out.append(
                {
                    "type": iv.topic,
                    "entityId": entity[1] if entity else None,
                    "entityKind": entity[0] if entity else None,
                    "firstPosition": iv.first_position,
                    "lastPosition": iv.last_position,
                    "count": iv.count,
                    "firstAt": iv.first_at,
                    "lastAt": iv.last_at,
                    "longestGapMs": iv.longest_gap_ms,
                }
            )
        return out

    def describe(self, position: int, event: Any) -> dict[str, Any]:
        """A domain event as the raw log shows it (camelCase, no secrets)."""
        entity = self.rm.entity_of(event.originator_id)
        data = {
            _camel(k): v
            for k, v in event.__dict__.items()
            if k not in _HIDDEN_FIELDS
        }
        return {
            "position": position,
            "type": type(event).TOPIC,
            "entityId": entity[1] if entity else None,
            "entityKind": entity[0] if entity else None,
            "at": event.__dict__.get("at"),
            "data": data,
        }

    async def log_head(self) -> int:
        """The newest position in the store (0 for an empty log)."""
        assert self.app is not None
        app = self.app
        head = await asyncio.get_running_loop().run_in_executor(
            None, app.recorder.max_notification_id
        )
        return head or 0

    async def _probe_store(self, timeout: float = 2.0) -> int:
        """The log head, within ``timeout``; concurrent health checks share one probe,
        so an unreachable store never ties up more than one thread."""
        if self._store_probe is None or self._store_probe.done():
            self._store_probe = asyncio.ensure_future(self.log_head())
            # Retrieve a late failure, so asyncio does not log it as never retrieved.
            self._store_probe.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.wait_for(asyncio.shield(self._store_probe), timeout)

    async def health(self) -> dict[str, Any]:
        """Whether the relay can write, is caught up, and is reaping."""
        checks: list[dict[str, Any]] = []
        try:
            head = await self._probe_store()
            checks.append({"name": "store", "status": "ok", "detail": f"log head {head}"})
        except TimeoutError:
            head = None
            checks.append(
                {"name": "store", "status": "error", "detail": "unreachable: no answer within 2 s"}
            )
        except Exception as e:
            head = None
            checks.append({"name": "store", "status": "error", "detail": f"unreachable: {e}"})
        if self.listener is not None:
            checks.append(self.listener.status())
        w = self.writer
        if w is not None and w.last_error:
            checks.append(
                {"name": "writes", "status": "error", "detail": f"last write failed: {w.last_error}"}
            )
        else:
            depth = w.queue_depth() if w is not None else 0
            checks.append({"name": "writes", "status": "ok", "detail": f"queue depth {depth}"})
        if head is None and self.tail is not None:
            head = max(self.tail.head_seen, self.rm.position)  # the newest we know of
        lag = (head - self.rm.position) if head is not None else None
        checks.append(
            {
                "name": "readModels",
                "status": "ok" if lag is not None and lag <= 1000 else "warn",
                "detail": f"position {self.rm.position}, lag {lag}",
                "position": self.rm.position,
                "lag": lag,
            }
        )
        if self.notifier is not None:
            checks.append(self.notifier.health(head))
        overdue = (
            self.last_reap_at is not None
            and self.now() - self.last_reap_at > 3 * self.settings.reap_every * 1000
        )
        reaper = self.rm.reaper
        if reaper.get("suspended"):
            checks.append(
                {
                    "name": "reaper",
                    "status": "suspended",
                    "detail": (
                        f"suspended since {reaper.get('since')}: {reaper.get('wouldReap')} of "
                        f"{reaper.get('online')} online entities went silent at once; "
                        "POST /api/system/reap?force=true reaps anyway"
                    ),
                }
            )
        else:
            checks.append(
                {
                    "name": "reaper",
                    "status": "warn" if overdue else "ok",
                    "detail": (
                        f"last run at {self.last_reap_at}" if self.last_reap_at else "not run yet"
                    ),
                }
            )
        statuses = {ch["status"] for ch in checks}
        status = (
            "error"
            if "error" in statuses
            else "degraded"
            if "suspended" in statuses
            else "warn"
            if "warn" in statuses
            else "ok"
        )
        return {
            "status": status,
            "version": __version__,
            "generatedAt": self.now(),
            "checks": checks,
        }


def grace_start(rm: ReadModels, started_at: int) -> int:
    """Silence before this moment never counts: the relay's start, or the reaper's last resume
    (ADR 0019: every entity gets a fresh stale-after from a resume)."""
    return max(started_at, int(rm.reaper.get("resumedAt") or 0))


@frozen
class RaceWindow:
    """A step of ``reap_pass``: decided, not yet written (where a racing heartbeat may land)."""

    candidates: tuple[c.ReapCandidate, ...]


def reap_pass(
    rm: ReadModels, now: int, started_at: int, settings: Settings, force: bool = False
) -> Generator[c.Command | RaceWindow, Any, c.ReapResult]:
    """One pass of the reaper at ``now``, as the commands it sends, in order.

    Yields each command for the caller to execute (the service through the
    writer, the property machine through ``RelayApp`` directly; so both run
    this very sequence) and receives its result; yields a ``RaceWindow``
    (with the candidates) between the reap's decision and its write. Reads
    only ``rm``, which the caller keeps current between steps, and never the
    clock.

    The brake (relay/domain/outage.py) holds the reap back when it would mark
    offline most of the fleet at once; command deadlines and claim leases
    still run out meanwhile, so every command still ends in time.
    """
    candidates = reap_candidates(rm, now, settings.stale_after_ms, grace_start(rm, started_at))
    brake = ReapBrake(settings.max_reap_fraction, settings.max_reap_min)
    online = online_count(rm)
    decision = brake.decide(bool(rm.reaper.get("suspended")), len(candidates), online, force)
    if decision is PassDecision.SUSPEND:
        log.warning("reaper suspended: %d of %d online entities went silent at once", len(candidates), online)
        yield c.SuspendReaping(len(candidates), online, now)
    elif decision is PassDecision.RESUME:
        log.warning("reaper resumed: everyone gets a fresh %g s grace", settings.stale_after)
        yield c.ResumeReaping(now)
    if decision is not PassDecision.REAP:
        candidates = []
    expired = expired_claims(rm, now)
    overdue = overdue_orchestrators(rm, now)
    lost_after_ms = int(settings.lost_after * 1000)
    suspended = bool(rm.reaper.get("suspended"))
    result = c.ReapResult([], [], suspended=suspended)
    if candidates or expired:
        yield RaceWindow(tuple(candidates))
        result = yield c.Reap(
            now=now,
            stale_after_ms=settings.stale_after_ms,
            grace_from=grace_start(rm, started_at),
            candidates=tuple(candidates),
            expired_claims=tuple(expired),
        )
    # After the reap's own commit, so that a host it just reaped is judged offline here.
    offline = lost_candidates(rm, now, lost_after_ms)
    if overdue or offline:
        ended: c.ReapResult = yield c.ExpireCommands(now, tuple(overdue), tuple(offline), lost_after_ms)
        result = evolve(
            result,
            expired_command_ids=ended.expired_command_ids,
            lost_orchestrator_ids=ended.lost_orchestrator_ids,
            suspended=suspended,
        )
    # Settled commands and messages older than keep-settled leave memory (ADR 0036).
    keep_ms = settings.keep_settled_ms
    forget = settled_to_forget(rm, now, keep_ms) if keep_ms is not None else None
    if forget is not None:
        yield forget
    return result


def reap_candidates(
    rm: ReadModels, now: int, stale_after_ms: int, grace_from: int
) -> list[c.ReapCandidate]:
    """Who looks stale in ``rm`` at ``now``, with the version each was judged at.

    Pure (no clock, no IO) so that the service and the property tests run the
    very same decision; ``grace_from`` is the relay's start, so silence that
    overlapped the relay's own downtime never counts.
    """
    out: list[c.ReapCandidate] = []
    for o in rm.orchestrators.values():
        if o["status"] == "online" and is_silent(o["lastSeen"], now, stale_after_ms, grace_from):
            version = rm.version_of("orchestrator", o["id"])
            if version is not None:
                out.append(c.ReapCandidate("orchestrator", o["id"], o["lastSeen"], version))
    orchestrator_agents = {o["agentId"] for o in rm.orchestrators.values()}
    for a in rm.agents.values():
        if a["id"] in orchestrator_agents:
            continue  # follows its orchestrator
        if a["status"] == "online" and is_silent(a["lastSeen"], now, stale_after_ms, grace_from):
            version = rm.version_of("agent", a["id"])
            if version is not None:
                out.append(c.ReapCandidate("agent", a["id"], a["lastSeen"], version))
    return out


def online_count(rm: ReadModels) -> int:
    """Online entities the reaper watches: orchestrators, and agents that are not one's record."""
    orchestrator_agents = {o["agentId"] for o in rm.orchestrators.values()}
    return sum(o["status"] == "online" for o in rm.orchestrators.values()) + sum(
        a["status"] == "online" and a["id"] not in orchestrator_agents for a in rm.agents.values()
    )


def overdue_orchestrators(rm: ReadModels, now: int) -> list[str]:
    """Orchestrators with a pending or running command past its deadline at ``now``."""
    return sorted(
        oid
        for oid, open_ in rm.open_commands.items()
        if any(c.get("deadlineAt") is not None and now > c["deadlineAt"] for c in open_.values())
    )


def lost_candidates(rm: ReadModels, now: int, lost_after_ms: int) -> list[str]:
    """Offline orchestrators with pending commands (they will not start them), or whose
    agents have been unknown for longer than ``lost_after_ms``."""
    out = []
    for o in rm.orchestrators.values():
        if o["status"] != "offline":
            continue
        since = o.get("offlineSince")
        lost = (
            since is not None
            and now - since > lost_after_ms
            and any(m.get("state") == "unknown" for m in o["managedAgents"])
        )
        pending = any(c["status"] == "pending" for c in rm.open_commands.get(o["id"], {}).values())
        if lost or pending:
            out.append(o["id"])
    return sorted(out)


_HIDDEN_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic", "token_hash"}
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
