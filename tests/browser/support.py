"""Helpers for the browser tests: a tiny HTTP client, a cuttable TCP proxy, launch options.

Why our own client and proxy: the tests must drive the relay exactly as a
script or a host daemon would (plain HTTP), and must be able to break the
dashboard's live stream on purpose without stopping the relay, so that events
can be written *while* the page is disconnected.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def browser_required() -> bool:
    """CI sets RELAY_REQUIRE_BROWSER=1 so that a missing browser fails instead of skipping."""
    return os.environ.get("RELAY_REQUIRE_BROWSER") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail where the browser is required."""
    if browser_required():
        pytest.fail(reason + " (RELAY_REQUIRE_BROWSER=1)")
    pytest.skip(reason, allow_module_level=True)


def playwright_api() -> ModuleType:
    """playwright.sync_api, or skip (fail under RELAY_REQUIRE_BROWSER=1)."""
    try:
        import playwright.sync_api as api
    except ImportError:
        skip_or_fail("the playwright package is not installed (pip install playwright)")
        raise
    if not CHROMIUM.exists():
        skip_or_fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return api


class Api:
    """Just enough of an HTTP client for the relay's JSON API."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Any status comes back as (status, json); nothing is raised for 4xx."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=15) as res:
                raw = res.read()
                status = res.status
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
        return status, (json.loads(raw) if raw else None)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A call that must succeed."""
        status, data = self.call(method, path, body)
        assert 200 <= status < 300, f"{method} {path} -> {status} {data}"
        return data

    def register(
        self,
        oid: str,
        hostname: str | None = None,
        base_dir: str = "/srv/work",
        providers: tuple[str, ...] = ("claude", "codex"),
        **extra: Any,
    ) -> dict[str, Any]:
        """Register an orchestrator as a host daemon would."""
        body = {
            "id": oid,
            "hostname": hostname or oid,
            "baseDir": base_dir,
            "providers": list(providers),
            **extra,
        }
        return self.ok("POST", "/api/orchestrators", body)

    def head(self) -> int:
        """The last position in the log."""
        after = 0
        while True:
            page = self.ok("GET", f"/api/log?after={after}&limit=1000")
            if not page["events"]:
                return after
            after = page["events"][-1]["position"]


class CuttableProxy:
    """A loopback TCP proxy whose connections can be cut and refused at will.

    While cut, new connections are either closed at once (``refuse``: a
    network error, after which an EventSource keeps retrying by itself with
    Last-Event-ID) or answered ``503`` (``unavailable``: what a reverse proxy
    says while its upstream restarts, after which an EventSource gives up for
    good and the page must open a new one).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._mode = "refuse"
        self.turned_away = threading.Event()  # set when a connection met the cut
        self.requests: list[str] = []  # what clients sent upstream, chunk by chunk
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                self.turned_away.set()
                if self._mode == "unavailable":
                    threading.Thread(target=self._unavailable, args=(client,), daemon=True).start()
                else:
                    client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for src, dst, record in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, record), daemon=True).start()

    @staticmethod
    def _unavailable(client: socket.socket) -> None:
        with contextlib.suppress(OSError), client:
            client.settimeout(5)
            client.recv(65536)  # the request head; its content does not matter
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Content-Length: 44\r\nConnection: close\r\n\r\n"
                b'{"error": "upstream restarting, try again"}\n'
            )

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    self.requests.append(chunk.decode("latin-1"))
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self, mode: str = "refuse") -> None:
        """Drop every open connection; until resume(), refuse new ones or answer 503."""
        self._mode = mode
        self.turned_away.clear()
        self._cut.set()
        with self._lock:
            socks = list(self._open)
        for sock in socks:
            self._close(sock)

    def stream_requests(self) -> list[str]:
        """The heads of the event-stream requests that went through, in order."""
        return [r for r in self.requests if r.startswith("GET /api/events")]

    def resume(self) -> None:
        """Let connections through again."""
        self._cut.clear()

    def close(self) -> None:
        """Stop listening and drop everything."""
        self._stopped = True
        self.cut()
        self.listener.close()
