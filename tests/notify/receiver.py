"""A webhook receiver as a real aiohttp server, doing what the README tells receivers to do.

It verifies the signature over the exact body, checks that the timestamp
header is the signed ``sentAt`` and is recent, and records every accepted
notice (duplicates too, so tests can see at-least-once at work). It can be
told to fail, so tests see retries.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from relay.notify import verify

WINDOW_MS = 5 * 60 * 1000


class Receiver:
    """Serves POST / on 127.0.0.1 from a loop of its own; thread-safe to read."""

    def __init__(
        self,
        secret: str,
        now_ms: Callable[[], int] | None = None,
        fail_first: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.secret = secret
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.fail_first = fail_first  # answer 503 to this many requests first
        self.failing = False  # answer 503 while set
        self.delay = delay  # seconds the receiver takes to answer (a slow receiver)
        self.notices: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []  # raw, as signed
        self.rejected: list[str] = []
        self.attempts = 0
        self.url = ""
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._cond:
            self.attempts += 1
            if self.fail_first > 0 or self.failing:
                self.fail_first = max(0, self.fail_first - 1)
                self._cond.notify_all()
                return web.Response(status=503)
        if self.delay:
            await asyncio.sleep(self.delay)
        problem = self._check(request, body)
        with self._cond:
            if problem:
                self.rejected.append(problem)
                self._cond.notify_all()
                return web.json_response({"error": problem}, status=401)
            self.notices.append(orjson.loads(body))
            self.headers.append(dict(request.headers))
            self.bodies.append(body)
            self._cond.notify_all()
        return web.json_response({"ok": True})

    def _check(self, request: web.Request, body: bytes) -> str | None:
        if not verify(self.secret, body, request.headers.get("X-Relay-Signature")):
            return "bad signature"
        notice = orjson.loads(body)
        if request.headers.get("X-Relay-Timestamp") != str(notice.get("sentAt")):
            return "timestamp header is not the signed sentAt"
        if abs(self.now_ms() - int(notice["sentAt"])) > WINDOW_MS:
            return "too old: a replay?"
        if request.headers.get("X-Relay-Delivery") != str(notice.get("id")):
            return "delivery header is not the signed id"
        if request.headers.get("X-Relay-Event") != notice.get("kind"):
            return "event header is not the signed kind"
        return None

    # -- reading, for tests ---------------------------------------------------------------

    def positions(self) -> list[int]:
        with self._cond:
            return [n["id"] for n in self.notices]

    def wait(self, pred: Callable[[Receiver], bool], timeout: float = 20.0) -> None:
        """Until ``pred(self)`` holds; woken by each request, never by polling time."""
        with self._cond:
            if not self._cond.wait_for(lambda: pred(self), timeout):
                raise AssertionError(
                    f"receiver: condition not met in {timeout} s; got {[n['id'] for n in self.notices]}, "
                    f"rejected {self.rejected}, attempts {self.attempts}"
                )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
