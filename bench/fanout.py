"""SSE fan-out benchmark (issue 4). Not a test: it prints figures.

Run from the repository root (about 3 minutes on the 2-core machine)::

    .venv/bin/python bench/fanout.py                   # 100 and 1,000 subscribers, 1 run
    .venv/bin/python bench/fanout.py --subs 1000 --runs 3 --seconds 20

For each subscriber count, three servers are measured with the same client,
one after the other, each in its own process on loopback:

relay      ``relay serve``; 100 heartbeats/s written through the API (one
           keep-alive client, paced), every subscriber on ``GET /api/events``.
bare       the yardstick: a bare aiohttp app whose one task writes each event's
           pre-encoded bytes to every open ``StreamResponse`` (await per write).
sse-send   the same, but through aiohttp-sse's ``send()`` per subscriber (the
           per-send formatting the relay's hub avoids).

The baselines generate their own 100 events/s (no HTTP write path in front),
so they flatter themselves a little. Latency is append→delivery: the event's
``lastSeen`` (the server's receive time, epoch ms) to its arrival at a
subscriber, on a sample of up to 100 subscribers, over the measured window
after a warm-up. Also: subscribers the server cut, server CPU (% of one
core) and RSS, and RSS per idle open stream (streams opened, nothing
written). Every figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from harness import REPO, Server, cpu_seconds, load_average, machine, median, pct

RATE = 100  # events per second
SAMPLE = 100  # subscribers whose latencies are recorded
LAST_SEEN = re.compile(rb'"lastSeen":(\d+)')
_LISTENING = re.compile(r"listening on (http://\S+)")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the baseline servers (child processes) --------------------------------------------


def serve_baseline(mode: str) -> None:
    """A bare aiohttp app: ``/events`` streams, one broadcaster at RATE events/s."""
    from aiohttp import web
    from aiohttp_sse import EventSourceResponse

    subs: set[Any] = set()
    template = {
        "id": "w0", "hostname": "host-00000", "status": "online", "agentId": "orchestrator-w0",
        "providers": ["claude", "codex"], "baseDir": "/srv/work", "envKeys": [], "meta": {},
        "managedAgents": [], "lastSeen": 0, "createdAt": 1_700_000_000_000,
    }

    async def events(request: web.Request) -> web.StreamResponse:
        resp: Any
        if mode == "sse-send":
            resp = EventSourceResponse(ping_interval=15)
            await resp.prepare(request)
        else:
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            resp.enable_chunked_encoding()
            await resp.prepare(request)
        await resp.write(b"retry: 1000\n\n")
        done = asyncio.get_running_loop().create_future()
        subs.add((resp, done))
        try:
            await done
        finally:
            subs.discard((resp, done))
        return resp

    async def broadcast(app: web.Application) -> Any:
        async def run() -> None:
            n = 0
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                next_at += 1 / RATE
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                n += 1
                template["lastSeen"] = time.time_ns() // 1_000_000
                template["id"] = f"w{n % 100}"
                data = orjson.dumps(template)
                wire = b"id: %d\nevent: orchestrator.status\ndata: %b\n\n" % (n, data)
                text = data.decode()
                for resp, done in list(subs):
                    try:
                        if mode == "sse-send":
                            await resp.send(text, id=str(n), event="orchestrator.status")
                        else:
                            await resp.write(wire)
                    except (ConnectionError, RuntimeError):
                        if not done.done():
                            done.set_result(None)

        task = asyncio.get_running_loop().create_task(run())
        yield
        task.cancel()

    app = web.Application()
    app.router.add_get("/events", events)
    app.cleanup_ctx.append(broadcast)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class Baseline:
    """A baseline server in its own process."""

    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-baseline", mode],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = _LISTENING.search(line)
        if not m:
            self.stop()
            raise RuntimeError(f"baseline {mode} did not start: {line!r}")
        self.url = m.group(1)
        self.pid = self.proc.pid
        self.path = "/events"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the client: many subscribers on one loop -------------------------------------------


class Subscriber(asyncio.Protocol):
    """Counts what arrives; a sampled one also records latencies."""

    def __init__(self, request: bytes, sample: bool, book: Book) -> None:
        self.request = request
        self.sample = sample
        self.book = book
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()
        self.closing = False
        self.events = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.opened.set_result(None)
        self.events += data.count(b"\nevent: ")
        if self.sample and self.book.recording:
            now_ms = time.time() * 1000
            for m in LAST_SEEN.finditer(data):
                self.book.latencies.append(now_ms - int(m.group(1)))

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closing:
            self.book.cut += 1
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the stream opened"))


class Book:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.recording = False
        self.cut = 0


async def open_subscribers(url: str, path: str, n: int, book: Book) -> list[Subscriber]:
    host, port = url.split("//")[1].split(":")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    subs: list[Subscriber] = []
    for i in range(n):
        sub = Subscriber(request, i < SAMPLE, book)
        await loop.create_connection(lambda s=sub: s, host, int(port))  # type: ignore[misc]
        subs.append(sub)
        if i % 100 == 99:
            await asyncio.gather(*(s.opened for s in subs[-100:]))
    await asyncio.gather(*(s.opened for s in subs))
    return subs


def write_heartbeats(port: int, ids: list[str], stop: threading.Event, lat: list[float]) -> int:
    """RATE heartbeats/s through the API until ``stop``; returns how many."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    n = 0
    next_at = time.perf_counter()
    while not stop.is_set():
        next_at += 1 / RATE
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not waiting for a result
        t0 = time.perf_counter()
        conn.request("POST", f"/api/orchestrators/{ids[n % len(ids)]}/heartbeat")
        resp = conn.getresponse()
        resp.read()
        lat.append((time.perf_counter() - t0) * 1000)
        if resp.status != 200:
            raise RuntimeError(f"heartbeat answered {resp.status}")
        n += 1
    conn.close()
    return n


def register(port: int, ids: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i, oid in enumerate(ids):
        body = orjson.dumps({"id": oid, "hostname": f"host-{i:05d}", "baseDir": "/srv/work"})
        conn.request("POST", "/api/orchestrators", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201, resp.status
    conn.close()


async def measure(
    kind: str, url: str, path: str, pid: int, n: int, warm: float, seconds: float, port: int = 0
) -> dict[str, Any]:
    book = Book()
    rss0 = rss_kb(pid)
    subs = await open_subscribers(url, path, n, book)
    await asyncio.sleep(1.0)  # let the server settle its allocations before reading RSS
    rss_idle = rss_kb(pid)
    stop = threading.Event()
    write_lat: list[float] = []
    writer: threading.Thread | None = None
    written = [0]
    if kind == "relay":
        ids = [f"w{i}" for i in range(100)]

        def run() -> None:
            written[0] = write_heartbeats(port, ids, stop, write_lat)

        writer = threading.Thread(target=run, daemon=True)
        writer.start()
    await asyncio.sleep(warm)
    book.recording = True
    cpu0, t0, mine0 = cpu_seconds(pid), time.perf_counter(), time.process_time()
    write_lat.clear()
    await asyncio.sleep(seconds)
    cpu1, t1, mine1 = cpu_seconds(pid), time.perf_counter(), time.process_time()
    book.recording = False
    rss_busy = rss_kb(pid)
    stop.set()
    if writer is not None:
        await asyncio.get_running_loop().run_in_executor(None, writer.join)
    for s in subs:
        s.closing = True
        if s.transport is not None:
            s.transport.close()
    await asyncio.sleep(0.2)
    lat = book.latencies
    return {
        "p50": median(lat),
        "p99": pct(lat, 99),
        "delivered": len(lat),
        "cut": book.cut,
        "cpu": 100 * (cpu1 - cpu0) / (t1 - t0),
        "clientCpu": 100 * (mine1 - mine0) / (t1 - t0),
        "rssMB": rss_busy / 1024,
        "perStreamKB": (rss_idle - rss0) / n,
        "writeP50": median(write_lat) if write_lat else None,
        "writeP99": pct(write_lat, 99) if write_lat else None,
    }


def run_relay(n: int, warm: float, seconds: float, keep: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-fanout-"))
    server = Server(tmp / "data", extra=["--max-streams-per-client", "0"]).start()
    try:
        register(server.port, [f"w{i}" for i in range(100)])
        return asyncio.run(
            measure("relay", server.url, "/api/events", server.pid, n, warm, seconds, server.port)
        )
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def run_baseline(mode: str, n: int, warm: float, seconds: float) -> dict[str, Any]:
    b = Baseline(mode)
    try:
        return asyncio.run(measure(mode, b.url, b.path, b.pid, n, warm, seconds))
    finally:
        b.stop()


def fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subs", default="100,1000", help="subscriber counts (comma-separated)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per scenario")
    p.add_argument("--warm", type=float, default=2.0)
    p.add_argument("--only", default="relay,bare,sse-send")
    p.add_argument("--keep", action="store_true", help="keep the relay's data folder")
    p.add_argument("--serve-baseline", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    print(f"# SSE fan-out at {RATE} events/s · {machine()} · load {load_average()}")
    print(f"# window {args.seconds:g} s after {args.warm:g} s warm-up; median of {args.runs} run(s)")
    print()
    print("| server | subscribers | p50 ms | p99 ms | cut | server CPU % | RSS MB | KB/idle stream "
          "| write p50/p99 ms | client CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.subs.split(",")):
        for kind in args.only.split(","):
            runs = []
            for _ in range(args.runs):
                if kind == "relay":
                    runs.append(run_relay(n, args.warm, args.seconds, args.keep))
                else:
                    runs.append(run_baseline(kind, n, args.warm, args.seconds))
            r = {k: median([x[k] for x in runs]) if runs[0][k] is not None else None for k in runs[0]}
            write = f"{fmt(r['writeP50'])} / {fmt(r['writeP99'])}" if r["writeP50"] is not None else "-"
            print(
                f"| {kind} | {n} | {fmt(r['p50'])} | {fmt(r['p99'])} | {r['cut']:.0f} | "
                f"{fmt(r['cpu'], '.0f')} | {fmt(r['rssMB'])} | {fmt(r['perStreamKB'])} | {write} | "
                f"{fmt(r['clientCpu'], '.0f')} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
