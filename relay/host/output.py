"""Live output of watched agents (issue 16, ADR 0031): tap a pane only while someone looks.

The relay cannot reach us, so it says which of our agents someone watches in
``orchestrator.watch`` frames on the event stream we already follow (the
whole set each time, the agents that need a fresh screen, and its push
limits). For each watched agent we:

1. **tap** its pane: ``tmux pipe-pane`` into a FIFO in a private folder,
   read as it comes (no polling, so nothing runs and nothing is sent for an
   agent nobody watches);
2. send a **snapshot** first: the pane's history and screen with colour
   escapes (``capture-pane -e``) and the cursor, so a fresh terminal shows
   what a person at the pane would see. The pipe is opened before the
   capture, so nothing is lost at the seam (a few bytes may show twice);
3. then **output** chunks, pushed in batches with at most one request in
   flight (so they arrive in order), paced below the relay's limits.

What cannot be delivered is dropped, never queued without bound: a burst
larger than one push, a failed push, a 429. The agent then gets a fresh
snapshot marked ``reset``, which tells viewers to start over from it; a
terminal needs the screen, not every byte. When the set no longer names an
agent, or the event stream is lost (we can no longer hear who watches), its
tap is closed. Terminal output never goes into the relay's log.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import json
import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.host.client import RelayClientError, RelayUnavailableError
from relay.host.context import Backoff, HostContext, now_ms
from relay.host.tmux import TmuxError

log = logging.getLogger("relay.host")

# Until the relay's first frame says otherwise (an older relay sends none, and then
# nothing is ever watched).
DEFAULT_LIMITS = {"pushesPerSecond": 20.0, "bytesPerSecond": 512 * 1024, "pushBytes": 128 * 1024}
MIN_PUSH_BYTES = 4096
RECONCILE_EVERY = 1.0  # seconds, while something is watched: restarts, new panes, closed pipes
READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class OutputConfig:
    """``relay host`` options for live output."""

    enabled: bool = True
    history: int = 500  # lines above the screen in a snapshot


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-output``, ``--output-history``."""
    parser.add_argument("--no-output", dest="output", action="store_false",
                        help="never send the agents' terminal output to the relay, even when "
                        "someone watches (the dashboard then shows none)")
    parser.add_argument("--output-history", type=int, default=500, metavar="LINES",
                        help="lines above the screen a new viewer sees (default 500; the "
                        "relay's push size may keep fewer)")


def output_from_args(args: argparse.Namespace) -> OutputConfig:
    """The validated options (``HostConfigError`` is not needed: any count works)."""
    return OutputConfig(enabled=bool(args.output), history=max(0, int(args.output_history)))


class Tap:
    """One pane piped into a FIFO that we read."""

    def __init__(self, agent_id: str, session: str, pane_id: str, path: Path) -> None:
        self.agent_id = agent_id
        self.session = session
        self.pane_id = pane_id
        self.path = path
        self.transport: asyncio.ReadTransport | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")


class _TapReader(asyncio.Protocol):
    def __init__(self, streamer: OutputStreamer, tap: Tap) -> None:
        self.streamer = streamer
        self.tap = tap

    def data_received(self, data: bytes) -> None:
        self.streamer.received(self.tap, data)


class OutputStreamer:
    """Taps the watched agents' panes and pushes what they print to the relay."""

    def __init__(self, ctx: HostContext, config: OutputConfig | None = None) -> None:
        self.ctx = ctx
        self.config = config or OutputConfig()
        self.wanted: set[str] = set()
        self.refresh: set[str] = set()
        self.limits: dict[str, float] = dict(DEFAULT_LIMITS)
        self.taps: dict[str, Tap] = {}
        # Per agent, in order: {"kind": "output", "parts": [...], "size": n} or a snapshot.
        self.queue: dict[str, list[dict[str, Any]]] = {}
        self.queued: dict[str, int] = {}  # characters of output waiting, per agent
        self.snapshots: dict[str, bool] = {}  # agent -> a snapshot is wanted (True: with reset)
        self.changed = asyncio.Event()
        self.wake = asyncio.Event()
        self.folder: Path | None = None
        self._serial = 0
        self._last_push = 0.0
        self._tokens = 0.0
        self._tokens_at = 0.0
        self.counts = {"pushes": 0, "bytes": 0, "failed": 0, "dropped": 0, "taps": 0}

    # -- what the relay says --------------------------------------------------------

    def on_watch(self, data: dict[str, Any]) -> None:
        """An ``orchestrator.watch`` frame: the agents someone watches now."""
        agents = data.get("agents")
        refresh = data.get("refresh")
        limits = data.get("limits")
        if not isinstance(agents, list):
            return
        wanted = {a for a in agents if isinstance(a, str)} if self.config.enabled else set()
        if isinstance(limits, dict):
            for key in DEFAULT_LIMITS:
                value = limits.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                    self.limits[key] = float(value)
        if isinstance(refresh, list):
            self.refresh |= {a for a in refresh if isinstance(a, str)} & wanted
        if wanted != self.wanted:
            log.info("live output: %d agent(s) watched", len(wanted))
        self.wanted = wanted
        self.changed.set()

    def on_stream_lost(self) -> None:
        """We can no longer hear who watches: stop until the stream tells us again."""
        if self.wanted:
            self.wanted = set()
            self.changed.set()

    # -- loops ---------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the taps in step with the watched set, and push what they read
        (a task group: if one loop fails, the other stops too, and the daemon
        restarts both)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reconcile_loop())
            group.create_task(self._push_loop())

    async def close(self) -> None:
        """Close every tap and remove the FIFOs (the daemon is stopping)."""
        for aid in list(self.taps):
            await self._close_tap(aid)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    async def _reconcile_loop(self) -> None:
        while True:
            busy = bool(self.wanted or self.taps)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # arrives as the event is set, and the daemon would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONCILE_EVERY if busy else None):
                    await self.changed.wait()
            self.changed.clear()
            await self.reconcile()

    async def reconcile(self) -> None:
        """Open taps for watched agents, close the others and those whose pane changed."""
        if not self.wanted and not self.taps:
            self.refresh.clear()
            return
        try:
            panes = await self.ctx.tmux.pipes()
        except TmuxError as exc:
            log.warning("live output: cannot list tmux panes: %s", exc)
            return
        agents = {a.agent_id: a for a in self.ctx.state.agents}
        for aid, tap in list(self.taps.items()):
            agent, pane = agents.get(aid), panes.get(tap.session)
            if (
                aid not in self.wanted
                or agent is None
                or agent.tmux_session != tap.session
                or pane is None
                or pane.pane_id != tap.pane_id  # restarted: a new pane under the same name
                or not pane.piped
            ):
                await self._close_tap(aid)
        for aid in sorted(self.wanted - set(self.taps)):
            agent = agents.get(aid)
            pane = panes.get(agent.tmux_session) if agent is not None else None
            if agent is None or pane is None or pane.dead:
                continue  # not running here (yet): a spawn on its way, a restart pending
            await self._open_tap(aid, agent.tmux_session, pane.pane_id)
        for aid in self.refresh:
            if aid in self.taps:
                self._want_snapshot(aid, reset=False)
        self.refresh.clear()

    async def _open_tap(self, aid: str, session: str, pane_id: str) -> None:
        folder = self._folder()
        self._serial += 1
        path = folder / f"{self._serial}.fifo"
        os.mkfifo(path, 0o600)
        # Read and write: the FIFO never reports end-of-file between writers.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        tap = Tap(aid, session, pane_id, path)
        loop = asyncio.get_running_loop()
        try:
            tap.transport, _ = await loop.connect_read_pipe(
                lambda: _TapReader(self, tap), open(fd, "rb", buffering=0)  # noqa: SIM115
            )
            # tmux runs this with sh; '#' would be read as a tmux format.
            command = "exec cat > " + shlex.quote(str(path)).replace("#", "##")
            await self.ctx.tmux.pipe_pane(session, command)
        except (OSError, TmuxError) as exc:
            log.warning("live output: cannot tap %s (tmux session %s): %s", aid, session, exc)
            if tap.transport is not None:
                tap.transport.close()
            else:
                os.close(fd)
            path.unlink(missing_ok=True)
            return
        self.taps[aid] = tap
        self.counts["taps"] += 1
        self._want_snapshot(aid, reset=True)
        log.info("live output: tapped %s (tmux session %s)", aid, session)

    async def _close_tap(self, aid: str) -> None:
        tap = self.taps.pop(aid, None)
        self.queue.pop(aid, None)
        self.queued.pop(aid, None)
        self.snapshots.pop(aid, None)
        if tap is None:
            return
        with contextlib.suppress(TmuxError):
            await self.ctx.tmux.pipe_pane(tap.session, None)
        if tap.transport is not None:
            tap.transport.close()
        tap.path.unlink(missing_ok=True)
        log.info("live output: stopped %s", aid)

    def _folder(self) -> Path:
        """A private folder beside the state file, emptied at first use (a killed
        daemon's FIFOs are left there)."""
        if self.folder is None:
            state = self.ctx.state_file.path
            folder = state.with_name(state.name + ".output")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700, parents=True)
            self.folder = folder
        return self.folder

    # -- reading ---------------------------------------------------------------------

    def received(self, tap: Tap, data: bytes) -> None:
        """What a pane printed (called by the FIFO's reader)."""
        aid = tap.agent_id
        if self.taps.get(aid) is not tap:
            return
        text = tap.decoder.decode(data)
        if not text:
            return
        size = self.queued.get(aid, 0) + len(text)
        if size > self.limits["pushBytes"] / 2:
            # More than one push can carry: drop it, and start the viewers over from a screen.
            self.counts["dropped"] += size
            self.queue.pop(aid, None)
            self.queued.pop(aid, None)
            self._want_snapshot(aid, reset=True)
            return
        self.queued[aid] = size
        q = self.queue.setdefault(aid, [])
        piece = self.limits["pushBytes"] / 8  # JSON may grow text up to 6x: one piece fits a push
        if q and q[-1]["kind"] == "output" and q[-1]["size"] + len(text) <= piece:
            q[-1]["parts"].append(text)
            q[-1]["size"] += len(text)
        else:
            q.append({"kind": "output", "parts": [text], "size": len(text), "at": now_ms()})
        self.wake.set()

    def _want_snapshot(self, aid: str, reset: bool) -> None:
        self.snapshots[aid] = self.snapshots.get(aid, False) or reset
        self.wake.set()

    # -- pushing -----------------------------------------------------------------------

    async def _push_loop(self) -> None:
        backoff = Backoff(self.ctx.config.max_backoff)
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            wait = self._last_push + 1.0 / self.limits["pushesPerSecond"] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing: what arrives meanwhile joins this push
            await self._take_snapshots()
            body, agents = self._batch()
            if not agents:
                continue
            await self._spend(len(body))
            self._last_push = loop.time()
            try:
                await self.ctx.client.push_output(body)
            except RelayClientError as exc:
                self.counts["failed"] += 1
                for aid in agents:  # lost: start these viewers over from a fresh screen
                    if aid in self.taps:
                        self.snapshots[aid] = True
                delay = backoff.next_delay()
                if isinstance(exc, RelayUnavailableError) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                log.warning("live output: a push failed (%s); next in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                self.wake.set()
                continue
            backoff.reset()
            self.counts["pushes"] += 1
            self.counts["bytes"] += len(body)
            if any(self.queue.values()) or self.snapshots:
                self.wake.set()

    async def _spend(self, size: int) -> None:
        """Wait until ``size`` bytes fit the relay's byte rate (a bucket of one second)."""
        rate = self.limits["bytesPerSecond"]
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < size:
            await asyncio.sleep((size - self._tokens) / rate)
            self._tokens = size
            self._tokens_at = loop.time()
        self._tokens -= size

    async def _take_snapshots(self) -> None:
        """Capture the screens asked for; output read meanwhile goes after them."""
        wanted, self.snapshots = self.snapshots, {}
        for aid, reset in wanted.items():
            tap = self.taps.get(aid)
            if tap is None:
                continue
            q = self.queue.setdefault(aid, [])
            if reset:  # what is queued is on the screen already
                q.clear()
                self.queued.pop(aid, None)
            item: dict[str, Any] = {"kind": "snapshot", "data": None, "reset": reset}
            q.append(item)
            try:
                screen = await self.ctx.tmux.screen(tap.session, self.config.history)
            except TmuxError as exc:
                log.info("live output: no screen of %s: %s", aid, exc)
                with contextlib.suppress(ValueError):
                    q.remove(item)
                self.changed.set()  # its pane may be gone: look again
                continue
            item.update(
                data=snapshot_text(screen, int(self.limits["pushBytes"] / 3)),
                cols=screen.cols, rows=screen.rows, at=now_ms(),
            )

    def _batch(self) -> tuple[bytes, list[str]]:
        """The next push: whole items, oldest first per agent, within the push size."""
        budget = int(self.limits["pushBytes"]) - 32
        parts: list[bytes] = []
        agents: list[str] = []
        size = 0
        for aid in list(self.queue):
            q = self.queue[aid]
            while q and q[0].get("data", "") is not None:
                encoded = _encode(aid, q[0])
                if size + len(encoded) + 1 > budget:
                    if not parts:  # cannot ever fit: drop it, send a screen instead
                        q.pop(0)
                        self._want_snapshot(aid, reset=True)
                        continue
                    break
                item = q.pop(0)
                if item["kind"] == "output":
                    self.queued[aid] = max(0, self.queued.get(aid, 0) - item["size"])
                parts.append(encoded)
                size += len(encoded) + 1
                if aid not in agents:
                    agents.append(aid)
            if not q:
                del self.queue[aid]
        return b'{"chunks":[' + b",".join(parts) + b"]}", agents


def _encode(aid: str, item: dict[str, Any]) -> bytes:
    if item["kind"] == "output":
        wire: dict[str, Any] = {"agentId": aid, "data": "".join(item["parts"]), "at": item["at"]}
    else:
        wire = {key: item[key] for key in ("kind", "data", "reset", "cols", "rows", "at")}
        wire["agentId"] = aid
    return json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode()


def snapshot_text(screen: Any, budget: int) -> str:
    """A pane's lines as terminal input that rebuilds it: history and screen, then the
    cursor put back. History lines are dropped from the top to stay within ``budget``
    encoded bytes; the screen itself is always kept."""
    lines = list(screen.lines)
    keep_from = max(0, len(lines) - screen.rows)
    size = sum(_json_size(line) + 4 for line in lines)
    start = 0
    while size > budget and start < keep_from:
        size -= _json_size(lines[start]) + 4
        start += 1
    head = "\x1b[?1049h" if screen.alternate else ""
    return (
        head + "\r\n".join(lines[start:]) + "\x1b[0m"
        + f"\x1b[{screen.cursor_y + 1};{screen.cursor_x + 1}H"
    )


def _json_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode())
