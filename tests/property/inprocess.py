"""A relay in this process, on a real loopback socket, with a clock the test holds.

``RelayProcess`` is the right tool when a test must see what users see; this is
for tests that must also reach inside: hold the clock (``FakeClock``) and set
the service's ``reap_hook``. The service, its writer thread, the read models
and the HTTP stack are the real ones; only the event loop is ours, on a
thread of its own, so that test threads can talk to it over the socket
concurrently.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import TracebackType

from aiohttp import web

from relay.clock import Clock
from relay.config import Settings
from relay.http.app import create_app
from relay.service import RelayService


class InProcessRelay:
    """``create_app`` + ``RelayService`` served on 127.0.0.1 from a background loop."""

    def __init__(self, data_dir: Path, clock: Clock, **settings: object) -> None:
        self.settings = Settings(data_dir=Path(data_dir), port=0, **settings)  # type: ignore[arg-type]
        self.service = RelayService(self.settings, clock=clock)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relay-loop", daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> InProcessRelay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.settings, self.service), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> InProcessRelay:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
