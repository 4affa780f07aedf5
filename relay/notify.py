"""Notifications that are never lost: the log is the outbox (ADR 0027).

For each ``--notify-url`` one worker follows the log from its own checkpoint
(``DATA/notify.json``, mode 0600), turns the few events an operator must hear
about into a JSON notice, POSTs it signed with ``--notify-secret``, and moves
its checkpoint only past what the receiver acknowledged with a 2xx. A crash
(``kill -9``) loses nothing: the worker starts again from its checkpoint, so
a receiver may see a notice twice, never zero times; the notice's ``id`` is
its log position, which receivers dedupe on.

The wire contract (a receiver verifies it; see the README's "Notifications")::

    POST <url>
    Content-Type: application/json
    X-Relay-Delivery: <id = log position>
    X-Relay-Event: <kind, e.g. host.offline>
    X-Relay-Timestamp: <sentAt, epoch ms of this attempt>
    X-Relay-Signature: sha256=<hex HMAC-SHA256(secret, the exact body bytes)>

    {"id": 42, "kind": "host.offline", "event": "OrchestratorReaped",
     "entityKind": "orchestrator", "entityId": "h1", "at": ..., "sentAt": ...,
     "summary": "...", "data": {...}}

The timestamp is inside the signed body (``sentAt``), so a receiver that
refuses bodies older than a few minutes and remembers the ids it has seen
within that window is safe from replays.

Why one worker per URL, each with its own position: a receiver that is down
for a day must not hold back the others, and what is "delivered" is a fact
about one receiver. Each worker reads the way ``RelayService.read_log`` does
(the path ``GET /api/log`` uses, archive included), one page at a time
(bounded memory), decoding only the topics in the table, and delivers in
log order, one notice in flight (so a receiver sees them in order even
after retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from attrs import frozen
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from relay import __version__

# The service that runs the notifier (relay.service.RelayService). Not imported:
# the service imports this module, and the layers allow no cycle (ADR 0028).
RelayService = Any

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "notify.json"
PAGE = 1_000  # events read per step: the most a worker holds in memory (raw rows)
MAX_CRASHLOOPS = 10_000  # crash-looping agents remembered per worker (bounded memory)
MAX_SUMMARY = 300
MAX_RESPONSE = 64 * 1024  # bytes of a receiver's answer read before closing
LAG_WARN = 100  # positions behind the log head before the health check warns
SAVE_EVERY = 1_000  # positions without a notice between checkpoint writes
SAVE_SECONDS = 0.25  # during a burst, the checkpoint moves at least this often
POLL_SECONDS = 5.0  # a wake-up even when no event was applied (another node's writes)


class DeliveryError(Exception):
    """Raised when a receiver did not acknowledge a notice with a 2xx."""


# -- notice kinds: one row per event an operator must hear about -----------------------

Builder = Callable[[dict[str, Any], "Derived"], "tuple[str, dict[str, Any]] | None"]


@frozen
class NoticeKind:
    """A notice kind: its name on the wire and how an event becomes its summary and data."""

    kind: str
    build: Builder


def _host_offline(ev: dict[str, Any], _: Derived) -> tuple[str, dict[str, Any]] | None:
    d = ev["data"]
    return f"host {ev['entityId']} went offline", {"lastSeen": d.get("lastSeen")}


def _command_failed(ev: dict[str, Any], _: Derived) -> tuple[str, dict[str, Any]] | None:
    d = ev["data"]
    if d.get("status") != "failed":
        return None
    why = f": {d['error']}" if d.get("error") else ""
    data = {"commandId": d.get("commandId"), "agentId": d.get("agentId"), "error": d.get("error")}
    return f"command {d.get('commandId')} on {ev['entityId']} failed{why}", data


def _command_expired(ev: dict[str, Any], _: Derived) -> tuple[str, dict[str, Any]] | None:
    d = ev["data"]
    data = {"commandId": d.get("commandId"), "reason": d.get("reason")}
    return f"command {d.get('commandId')} on {ev['entityId']} expired: {d.get('reason')}", data


def _crashloop(ev: dict[str, Any], derived: Derived) -> tuple[str, dict[str, Any]] | None:
    """Only agents that *entered* a crash loop with this report (the host repeats the marker)."""
    new = derived.crashloops_reported(str(ev["entityId"]), ev["data"].get("agents") or [])
    if not new:
        return None
    names = ", ".join(a["agentId"] for a in new)
    return f"{names} on {ev['entityId']} kept crashing; the host stopped restarting", {"agents": new}


def _awaiting_input(ev: dict[str, Any], _: Derived) -> tuple[str, dict[str, Any]] | None:
    """Only a question (attention ``input``): an agent merely ``idle`` is for the dashboard,
    not for a page at night (ADR 0032)."""
    d = ev["data"]
    if d.get("attention") != "input":
        return None
    data = {k: d.get(k) for k in ("agentId", "reason", "excerpt")}
    return f"{d.get('agentId')} on {ev['entityId']} is waiting for input: {d.get('reason')}", data


NOTICE_KINDS: Mapping[str, NoticeKind] = {
    "OrchestratorReaped": NoticeKind("host.offline", _host_offline),
    "CommandResultRecorded": NoticeKind("command.failed", _command_failed),
    "CommandExpired": NoticeKind("command.expired", _command_expired),
    "ManagedAgentsReported": NoticeKind("agent.crashloop", _crashloop),
    # Issue 16's needs-input fact (ADR 0032).
    "AgentAwaitingInput": NoticeKind("agent.awaitingInput", _awaiting_input),
}


# Topics the workers decode: the table's, and what ends an orchestrator's crash loops.
WATCHED = frozenset(NOTICE_KINDS) | {"OrchestratorRemoved"}


class Derived:
    """What a worker must remember between events to notice a *change* (crash loops).

    Saved with the worker's position, so after a restart it is exactly the
    state at that position: the same log gives the same notices.
    """

    def __init__(self, crashloops: dict[str, int] | None = None) -> None:
        self.crashloops: dict[str, int] = dict(crashloops or {})  # "orch/agent" -> crashloop.at

    def crashloops_reported(self, orchestrator: str, agents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prefix = f"{orchestrator}/"
        before = {k: v for k, v in self.crashloops.items() if k.startswith(prefix)}
        for k in before:
            del self.crashloops[k]
        new = []
        for a in agents:
            loop = a.get("crashloop") if isinstance(a, dict) else None
            if not isinstance(loop, dict):
                continue
            key = f"{prefix}{a.get('agentId')}"
            if before.get(key) != loop.get("at"):
                new.append({"agentId": a.get("agentId"), "provider": a.get("provider"), "crashloop": loop})
            self.crashloops[key] = loop.get("at")  # type: ignore[assignment]
        while len(self.crashloops) > MAX_CRASHLOOPS:
            del self.crashloops[next(iter(self.crashloops))]
        return new

    def forget(self, orchestrator: str) -> None:
        self.crashloops_reported(orchestrator, [])


def notice_for(ev: dict[str, Any], derived: Derived) -> dict[str, Any] | None:
    """The notice an event (as ``GET /api/log`` shows it) makes, or None; updates ``derived``."""
    if ev["type"] == "OrchestratorRemoved" and ev.get("entityId"):
        derived.forget(str(ev["entityId"]))
        return None
    kind = NOTICE_KINDS.get(ev["type"])
    if kind is None:
        return None
    built = kind.build(ev, derived)
    if built is None:
        return None
    summary, data = built
    return {
        "id": ev["position"],
        "kind": kind.kind,
        "event": ev["type"],
        "entityKind": ev.get("entityKind"),
        "entityId": ev.get("entityId"),
        "at": ev.get("at"),
        "summary": summary[:MAX_SUMMARY],
        "data": data,
    }


# -- signing -------------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The ``X-Relay-Signature`` value: ``sha256=`` + hex HMAC-SHA256 over the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does first (constant-time); then it checks ``sentAt`` and the id."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def url_key(url: str) -> str:
    """A URL's name in the checkpoint file: a hash, since webhook URLs often hold a secret."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def redacted(url: str) -> str:
    """A URL fit for logs and health: scheme, host and port only."""
    p = urlsplit(url)
    port = f":{p.port}" if p.port else ""
    return f"{p.scheme}://{p.hostname}{port}/…"


# -- the checkpoint file ------------------------------------------------------------------


class Checkpoints:
    """``DATA/notify.json``: each URL's delivered position and derived state, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError):
            # A torn file cannot happen (atomic replace), so this is damage from outside; the
            # relay still starts (its other duties matter more), loudly, with URLs as if new.
            log.error(
                "notify checkpoint %s is unreadable: notices since each URL's last position "
                "will not be sent; every URL starts at the log head",
                self.path,
            )
            return
        if isinstance(raw, dict) and isinstance(raw.get("urls"), dict):
            self.entries = {k: v for k, v in raw["urls"].items() if isinstance(v, dict)}

    async def save(self) -> None:
        data = orjson.dumps({"version": 1, "urls": self.entries})
        async with self._lock:
            done = asyncio.get_running_loop().run_in_executor(None, _write_private, self.path, data)
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                await done  # a cancelled worker must not let go of the lock mid-write
                raise


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- the workers ----------------------------------------------------------------------------


class UrlWorker:
    """One receiver: reads the log from its position, delivers notices in order, saves progress."""

    def __init__(self, notifier: Notifier, url: str) -> None:
        self.notifier = notifier
        self.url = url
        self.key = url_key(url)
        self.position = 0
        self.saved = 0  # the position in the checkpoint file
        self.saved_at = 0.0  # when it was written (loop time)
        self.derived = Derived()
        self.delivered = 0
        self.failures = 0  # consecutive failed attempts at the current notice
        self.last_error: str | None = None

    def status(self, head: int | None) -> dict[str, Any]:
        lag = None if head is None else max(0, head - self.position)
        return {
            "url": redacted(self.url),
            "key": self.key,
            "position": self.position,
            "lag": lag,
            "delivered": self.delivered,
            "failures": self.failures,
            "lastError": self.last_error,
        }

    async def run(self) -> None:
        n = self.notifier
        loop = asyncio.get_running_loop()
        while True:
            events, nxt, read = await n.read_page(self.position)
            if not self.failures:
                self.last_error = None  # the store is readable again
            sent = 0
            for ev in events:
                notice = notice_for(ev, self.derived)
                if notice is not None:
                    await self._deliver(notice)
                    sent += 1
                    self.delivered += 1
                    self.position = ev["position"]  # everything up to here is done
                    if loop.time() - self.saved_at >= SAVE_SECONDS:
                        await self.save()  # a crash repeats at most this long of deliveries
            self.position = max(self.position, nxt)
            # Only ever past what got a 2xx. Pages without notices need no fsync each: at
            # worst a restart re-reads them (SAVE_EVERY positions), and sends nothing twice.
            if sent or self.position - self.saved >= SAVE_EVERY:
                await self.save()
            if read < PAGE:
                await n.wait_for_more(self.position)

    async def save(self) -> None:
        self.notifier.checkpoints.entries[self.key] = {
            "position": self.position,
            "crashloops": dict(self.derived.crashloops),
        }
        await self.notifier.checkpoints.save()
        self.saved = self.position
        self.saved_at = asyncio.get_running_loop().time()

    async def _deliver(self, notice: dict[str, Any]) -> None:
        n = self.notifier

        def failed(state: RetryCallState) -> None:
            self.failures = state.attempt_number
            exc = state.outcome.exception() if state.outcome is not None else None
            self.last_error = str(exc).replace(self.url, redacted(self.url))[:200]  # health is public
            if state.attempt_number in (1, 10) or state.attempt_number % 100 == 0:
                log.warning(
                    "notice %d to %s not delivered (attempt %d): %s; retrying",
                    notice["id"], redacted(self.url), state.attempt_number, self.last_error,
                )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DeliveryError),
            wait=wait_exponential_jitter(multiplier=n.retry_initial, max=n.retry_max, jitter=n.retry_initial),
            before_sleep=failed,
            reraise=True,
        )
        async for attempt in retrying:  # never gives up: at-least-once means until acknowledged
            with attempt:
                await self._post(notice)
        self.failures = 0
        self.last_error = None

    async def _post(self, notice: dict[str, Any]) -> None:
        n = self.notifier
        sent_at = n.service.now()
        body = orjson.dumps({**notice, "sentAt": sent_at})
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"relay/{__version__}",
            "X-Relay-Delivery": str(notice["id"]),
            "X-Relay-Event": notice["kind"],
            "X-Relay-Timestamp": str(sent_at),
            "X-Relay-Signature": sign(n.secret, body),
        }
        assert n.session is not None
        try:
            async with n.session.post(self.url, data=body, headers=headers, allow_redirects=False) as r:
                await r.content.read(MAX_RESPONSE)
                if not 200 <= r.status < 300:
                    raise DeliveryError(f"HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise DeliveryError(f"{type(e).__name__}: {e}") from None


class Notifier:
    """All the workers of one relay, started and stopped with the service."""

    def __init__(
        self,
        service: RelayService,
        urls: tuple[str, ...],
        secret: str,
        retry_initial: float = 0.5,
        retry_max: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.service = service
        self.secret = secret
        self.retry_initial = min(retry_initial, retry_max)
        self.retry_max = retry_max
        self.timeout = timeout
        self.checkpoints = Checkpoints(Path(service.settings.data_dir) / CHECKPOINT_FILE)
        self.workers = [UrlWorker(self, u) for u in dict.fromkeys(urls)]
        self.session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._more = asyncio.Event()

    async def start(self) -> None:
        """Load or create each URL's checkpoint, then start the workers.

        A URL seen for the first time starts at the read models' position (a
        new receiver is not flooded with history), and that start is saved
        before anything else, so that a crash right after loses nothing.
        """
        s = self.service
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.checkpoints.load)
        for w in self.workers:
            saved = self.checkpoints.entries.get(w.key)
            if saved is not None and isinstance(saved.get("position"), int):
                w.position = w.saved = saved["position"]
                w.derived = Derived(saved.get("crashloops") or {})
            else:
                w.position = w.saved = s.rm.position
                w.derived = Derived(_crashloops_now(s))
                self.checkpoints.entries[w.key] = {"position": w.position, "crashloops": w.derived.crashloops}
        await self.checkpoints.save()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(5.0, self.timeout)),
            connector=aiohttp.TCPConnector(limit_per_host=2),
        )
        if s.tail is not None:
            s.tail.listeners.append(self._on_applied)
        self._tasks = [loop.create_task(self._run(w)) for w in self.workers]
        log.info("notifier delivering to %s", ", ".join(redacted(w.url) for w in self.workers))

    async def _run(self, w: UrlWorker) -> None:
        while True:
            try:
                await w.run()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # e.g. the store briefly unreadable: try again, never die
                w.last_error = f"{type(e).__name__}: {e}".replace(w.url, redacted(w.url))[:200]
                log.warning("notifier for %s stumbled; retrying", redacted(w.url), exc_info=True)
                await asyncio.sleep(self.retry_max / 10 + random.random())

    async def read_page(self, after: int) -> tuple[list[dict[str, Any]], int, int]:
        """The events after ``after`` that may make a notice, as ``GET /api/log`` shows them;
        the position to read from next; and how many events were read.

        The same path as ``RelayService.read_log`` (the archive-aware ``LogReader``,
        the library's mapper, ``describe``), except that rows are filtered by
        topic before they are decoded: most of a log is heartbeats, and a
        receiver that was down for a week is caught up without decoding them.
        """
        s = self.service
        assert s.reader is not None and s.app is not None
        reader = s.reader
        notes = await asyncio.get_running_loop().run_in_executor(None, reader.select, after, PAGE)
        mapper = s.app.mapper
        events = [s.describe(n.id, mapper.to_domain_event(n)) for n in notes if n.topic in WATCHED]
        return events, (notes[-1].id if notes else after), len(notes)

    def _on_applied(self, position: int, event: Any, changes: Any) -> None:
        self._more.set()

    async def wait_for_more(self, position: int) -> None:
        """Until an event after ``position`` was applied (or a poll interval passed)."""
        if self.service.rm.position > position:
            return
        self._more.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._more.wait(), POLL_SECONDS)

    async def stop(self) -> None:
        s = self.service
        if s.tail is not None and self._on_applied in s.tail.listeners:
            s.tail.listeners.remove(self._on_applied)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.session is not None:
            await self.session.close()
        for w in self.workers:
            if w.position > w.saved:
                with contextlib.suppress(OSError):
                    await w.save()  # a clean stop re-reads nothing

    def health(self, head: int | None) -> dict[str, Any]:
        """The ``notifier`` check of ``/api/health``: each URL's lag; warn when one is behind."""
        urls = [w.status(head) for w in self.workers]
        behind = [
            u for u in urls if u["lag"] is None or u["lag"] > LAG_WARN or u["failures"] or u["lastError"]
        ]
        detail = ", ".join(f"{u['url']} lag {u['lag']}" for u in urls)
        if behind:
            detail += f"; {len(behind)} behind or failing"
        return {"name": "notifier", "status": "warn" if behind else "ok", "detail": detail, "urls": urls}


def _crashloops_now(s: RelayService) -> dict[str, int]:
    """Agents crash-looping in the read models now: a new URL is not told about old loops."""
    out: dict[str, int] = {}
    for o in s.rm.orchestrators.values():
        for a in o.get("managedAgents") or ():
            loop = a.get("crashloop")
            if isinstance(loop, dict):
                out[f"{o['id']}/{a.get('agentId')}"] = loop.get("at")
    return out
