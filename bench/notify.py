"""Notifier throughput: signed deliveries per second to a local receiver (issue 16).

A real ``relay serve`` in a child process writes ``--notices`` failed
command results (over HTTP) and stops. The script then sets the notifier's
checkpoint for the receiver's URL to position 0 (as if the receiver had been
down all along: the log is the outbox) and starts the relay again with
``--notify-url`` pointing at a receiver in this process (aiohttp, verifying
every signature); it times the backlog's delivery, from the first accepted
notice to the last. Each notice is read from the log, signed, POSTed and
acknowledged before the next (one in flight per URL, in order).

Run: ``.venv/bin/python bench/notify.py`` (about 20 s; ``--notices N``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path

import orjson
from aiohttp import web
from harness import Conn, Server, load_average, machine

from relay.notify import CHECKPOINT_FILE, url_key, verify

SECRET = "bench-notify-secret-0123456789"


class Sink:
    """The receiver: verifies and counts."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.times: list[float] = []
        self.bad = 0
        self.done = threading.Event()
        self.want = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET, body, request.headers.get("X-Relay-Signature")):
            self.bad += 1
            return web.Response(status=401)
        self.ids.append(orjson.loads(body)["id"])
        self.times.append(time.perf_counter())
        if len(set(self.ids)) >= self.want:
            self.done.set()
        return web.Response(status=204)


def serve_sink(sink: Sink) -> tuple[str, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> str:
        app = web.Application()
        app.router.add_post("/hook", sink.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/hook"

    return asyncio.run_coroutine_threadsafe(start(), loop).result(10), loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notices", type=int, default=2000)
    args = ap.parse_args()
    sink = Sink()
    sink.want = args.notices
    url, _ = serve_sink(sink)
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-notify-"))
    try:
        with Server(tmp / "data") as srv:
            conn = Conn(srv.port)
            conn.ok("POST", "/api/orchestrators", {"id": "h1", "hostname": "h1", "baseDir": "/srv"})
            t0 = time.perf_counter()
            for i in range(args.notices):
                spawned = conn.ok("POST", "/api/orchestrators/h1/spawn", {"provider": "claude"})
                cid = orjson.loads(spawned)["command"]["id"]
                result = {"status": "failed", "error": f"e{i}"}
                conn.ok("POST", f"/api/orchestrators/h1/commands/{cid}/result", result)
            wrote = time.perf_counter() - t0
            conn.close()
        checkpoint = {"version": 1, "urls": {url_key(url): {"position": 0, "crashloops": {}}}}
        (tmp / "data" / CHECKPOINT_FILE).write_bytes(orjson.dumps(checkpoint))
        with Server(tmp / "data", extra=["--notify-url", url, "--notify-secret", SECRET]):
            if not sink.done.wait(600):
                raise SystemExit(f"only {len(set(sink.ids))} of {args.notices} notices arrived")
            span = sink.times[-1] - sink.times[0]
            rate = (len(sink.ids) - 1) / span if span > 0 else float("inf")
            in_order = sink.ids == sorted(sink.ids)
        print(f"machine: {machine()}; load average {load_average()}")
        print(f"wrote {args.notices} failed results (2 requests each) in {wrote:.1f} s")
        print(
            f"delivered {len(sink.ids)} notices ({len(set(sink.ids))} distinct, bad signatures "
            f"{sink.bad}, in order: {in_order}) in {span:.2f} s: {rate:.0f} deliveries/s"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
