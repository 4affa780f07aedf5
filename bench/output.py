"""Live output benchmark (issue 16, ADR 0031). Not a test: it prints figures.

Run from the repository root (about 2 minutes on the 2-core machine)::

    .venv/bin/python bench/output.py                    # 100 agents, 20 s watched
    .venv/bin/python bench/output.py --agents 20 --seconds 10 --beats 5
    .venv/bin/python bench/output.py --pushes 200       # the relay's pace limit raised

What runs, each part real and on loopback:

- ``relay serve`` (``--stale-after 3``: a heartbeat a second, so an idle window
  of N heartbeats takes N seconds);
- a counting TCP proxy in this process between the host daemon and the relay:
  every byte the host sends (requests, headers and bodies) is counted;
- ``relay host`` on a private tmux socket, with ``--agents`` printers
  (``tests/output/printer.py``: a coloured ``tick N <epoch seconds>`` line every
  ``--every`` seconds);
- one SSE viewer per agent in this process (aiohttp), parsing every ``output``
  event and taking arrival time minus the printed time of each line in it.

Phases: (1) nobody watches: bytes the host sends over ``--beats`` heartbeats;
(2) every agent watched: latency pane → viewer, p50/p99, over ``--seconds``
after a warm-up, with the bytes per second the host sends and both processes'
CPU; (3) nobody watches again: the bytes per heartbeat are back where they were.

Yardstick, same run: the same printers in tmux sessions of their own, each
piped (``tmux pipe-pane``) into a FIFO this process reads: the latency of
tmux alone, with no host daemon, HTTP or relay in between.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from harness import REPO, Server, cpu_seconds, load_average, machine, median, pct

PRINTER = REPO / "tests" / "output" / "printer.py"
STAMP = re.compile(r"tick \d+\x1b\[0m (\d+\.\d+)")
HEARTBEAT_ROUTE = "/api/orchestrators/{id}/heartbeat"
OUTPUT_ROUTE = "/api/orchestrators/{id}/output"


# -- the counting proxy ------------------------------------------------------------------


class Proxy:
    """Forwards 127.0.0.1:port to the relay, counting the bytes each way (own loop, own thread)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.up = 0  # host -> relay
        self.down = 0  # relay -> host
        self.port = 0
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


# -- helpers --------------------------------------------------------------------------------


def api(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
    return json.loads(text) if text else None


def requests(base: str, route: str) -> int:
    """POSTs the relay has answered on ``route`` (its /metrics)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for labels, value in re.findall(r"^relay_http_requests_total\{(.*)\} ([0-9.e+]+)$", text, re.M):
        if f'route="{route}"' in labels and 'method="POST"' in labels:
            total += float(value)
    return int(total)


def heartbeats(base: str) -> int:
    return requests(base, HEARTBEAT_ROUTE)


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def quiet(proxy: Proxy, most: int = 2048, timeout: float = 30.0) -> None:
    """Until a whole second passes with the host sending at most ``most`` bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = proxy.up
        time.sleep(1.0)  # a measuring window, not a wait for an event
        if proxy.up - before <= most:
            return
    raise RuntimeError("the host kept sending after the viewers left")


def idle_window(base: str, proxy: Proxy, beats: int) -> tuple[int, int, int]:
    """What the host sent while ``beats`` heartbeats arrived: (bytes, heartbeats, output pushes)."""
    start = heartbeats(base)
    wait_until(lambda: heartbeats(base) > start, 10, "a heartbeat")  # start on a beat
    first, up0, pushes0 = heartbeats(base), proxy.up, requests(base, OUTPUT_ROUTE)
    wait_until(lambda: heartbeats(base) >= first + beats, beats * 3 + 10, f"{beats} heartbeats")
    return proxy.up - up0, heartbeats(base) - first, requests(base, OUTPUT_ROUTE) - pushes0


# -- viewers ----------------------------------------------------------------------------------


async def watch(session: aiohttp.ClientSession, url: str, sink: list[float],
                started: asyncio.Event, measuring: threading.Event, stop: asyncio.Event) -> None:
    async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200, resp.status
        event = ""
        async for raw in resp.content:
            if stop.is_set():
                return
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                arrived = time.time()
                if event == "snapshot":
                    started.set()
                elif event == "output" and measuring.is_set():
                    text = json.loads(line[5:])["data"]
                    sink.extend(arrived - float(t) for t in STAMP.findall(text))


async def watched_phase(base: str, oid: str, agents: list[str], seconds: float,
                        warmup: float) -> tuple[list[float], int]:
    sink: list[float] = []
    measuring = threading.Event()
    stop = asyncio.Event()
    starts = [asyncio.Event() for _ in agents]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks = [
            asyncio.create_task(watch(
                session, f"{base}/api/orchestrators/{oid}/agents/{aid}/output", sink, s,
                measuring, stop))
            for aid, s in zip(agents, starts, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in starts)), 120)
        await asyncio.sleep(warmup)
        measuring.set()
        await asyncio.sleep(seconds)
        measuring.clear()
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sink, len(agents)


# -- the yardstick: tmux alone ------------------------------------------------------------------


def tmux_alone(count: int, every: float, seconds: float, folder: Path) -> list[float]:
    """Printers in their own sessions piped into FIFOs read here: tmux's own latency."""
    sock = f"relay-bench-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock]
    readers: list[tuple[int, str]] = []
    latencies: list[float] = []
    try:
        for i in range(count):
            fifo = folder / f"yard-{i}.fifo"
            os.mkfifo(fifo, 0o600)
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            name = f"yard-{i}"
            cmd = shlex.join([sys.executable, str(PRINTER), f"tick {every}"])
            subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "200", "-y", "50", cmd],
                           check=True)
            subprocess.run([*tmux, "pipe-pane", "-O", "-t", f"={name}:",
                            f"exec cat > {shlex.quote(str(fifo))}"], check=True)
            readers.append((fd, ""))
        import selectors

        sel = selectors.DefaultSelector()
        for fd, _ in readers:
            sel.register(fd, selectors.EVENT_READ)
        buffers = {fd: "" for fd, _ in readers}
        start = time.monotonic() + 2.0  # warm-up
        end = start + seconds
        while time.monotonic() < end:
            for key, _ in sel.select(0.5):
                data = os.read(key.fd, 65536).decode(errors="replace")
                arrived = time.time()
                text = buffers[key.fd] + data
                cut = text.rfind("\n")
                buffers[key.fd] = text[cut + 1:]
                if time.monotonic() >= start:
                    latencies.extend(arrived - float(t) for t in STAMP.findall(text[: cut + 1]))
        return latencies
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)
        for fd, _ in readers:
            os.close(fd)


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between a printer's lines")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window while watched")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--beats", type=int, default=10, help="heartbeats per idle window")
    ap.add_argument("--pushes", type=int, default=None,
                    help="the relay's --output-pushes (pushes a second per host; default 100)")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/output.py needs tmux")
    print(f"machine: {machine()}; load average {load_average()}; relay --output-pushes "
          f"{args.pushes or 100}")
    root = Path(tempfile.mkdtemp(prefix="relay-bench-output-"))
    sock = f"relay-bench-{uuid.uuid4().hex[:8]}"
    host: subprocess.Popen[bytes] | None = None
    extra = ["--stale-after", "3"]
    if args.pushes:
        extra += ["--output-pushes", str(args.pushes)]
    server = Server(root / "data", extra=extra).start()
    try:
        base = server.url
        proxy = Proxy(server.port)
        (root / "work").mkdir()
        oid = "bench-host"
        printer = shlex.join([sys.executable, str(PRINTER)])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "TMUX"))}
        host_log = open(root / "host.log", "wb")  # noqa: SIM115 - the child writes it
        host = subprocess.Popen(
            [sys.executable, "-m", "relay.host", "--relay", f"http://127.0.0.1:{proxy.port}",
             "--id", oid, "--base-dir", str(root / "work"), "--state", str(root / "state.json"),
             "--tmux-socket", sock, "--provider", f"claude={printer}", "--stale-after", "3",
             "--start-grace", "0.1", "--check-every", "1", "--log-level", "WARNING"],
            stdout=host_log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
        wait_until(lambda: api(base, "GET", "/api/orchestrators").__len__() == 1, 30, "the host")
        t0 = time.monotonic()
        for i in range(args.agents):
            api(base, "POST", f"/api/orchestrators/{oid}/spawn",
                {"provider": "claude", "label": f"p{i:03d}", "prompt": f"tick {args.every}"})
        agents = wait_until(
            lambda: (lambda a: a if len(a) == args.agents else None)(
                [m["agentId"] for m in api(base, "GET", f"/api/orchestrators/{oid}")["managedAgents"]]),
            600, f"{args.agents} agents running")
        print(f"{args.agents} printers running ({time.monotonic() - t0:.0f} s to spawn), "
              f"a line each every {args.every:g} s")

        idle_bytes, idle_beats, idle_pushes = idle_window(base, proxy, args.beats)
        print(f"nobody watching : host sent {idle_bytes} B over {idle_beats} heartbeats "
              f"= {idle_bytes / max(idle_beats, 1):.0f} B per heartbeat; {idle_pushes} output pushes")

        up0, cpu_h0, cpu_r0 = proxy.up, cpu_seconds(host.pid), cpu_seconds(server.pid)
        w0 = time.monotonic()
        lat, viewers = asyncio.run(watched_phase(base, oid, agents, args.seconds, args.warmup))
        spent = time.monotonic() - w0
        up, cpu_h, cpu_r = proxy.up - up0, cpu_seconds(host.pid) - cpu_h0, cpu_seconds(server.pid) - cpu_r0
        ms = [x * 1000 for x in lat]
        print(f"{viewers} watched : {len(ms)} lines measured; latency pane -> viewer "
              f"p50 {median(ms):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms):.1f} ms")
        print(f"                  host sent {up / spent / 1024:.1f} KiB/s; CPU host "
              f"{100 * cpu_h / spent:.0f} %, relay {100 * cpu_r / spent:.0f} % of a core")

        quiet(proxy)  # the relay notices departed viewers within a second; the host stops
        again_bytes, again_beats, again_pushes = idle_window(base, proxy, args.beats)
        print(f"nobody watching : host sent {again_bytes} B over {again_beats} heartbeats "
              f"= {again_bytes / max(again_beats, 1):.0f} B per heartbeat; {again_pushes} output "
              "pushes (after the viewers left)")

        yard = [x * 1000 for x in tmux_alone(min(args.agents, 20), args.every, args.seconds / 2, root)]
        print(f"yardstick       : tmux alone ({min(args.agents, 20)} panes, pipe-pane -> FIFO): "
              f"p50 {median(yard):.1f} ms, p99 {pct(yard, 99):.1f} ms")
        print(f"ratio           : p50 x{median(ms) / max(median(yard), 1e-3):.1f}, "
              f"p99 x{pct(ms, 99) / max(pct(yard, 99), 1e-3):.1f} over tmux alone; "
              f"load average {load_average()}")
    finally:
        if host is not None:
            host.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                host.wait(15)
            if host.poll() is None:
                host.kill()
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, check=False)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
