"""Helpers for the multi-node tests: waiting on a condition, a raw SSE reader, a TCP proxy."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0, every: float = 0.01) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


# -- SSE ---------------------------------------------------------------------------


class SseEvent:
    """One received event: its id (log position), name and decoded data."""

    __slots__ = ("data", "id", "name")

    def __init__(self, id: int, name: str, data: Any) -> None:
        self.id = id
        self.name = name
        self.data = data

    def __repr__(self) -> str:
        return f"<SseEvent {self.id} {self.name}>"


class SseStream:
    """``GET /api/events`` read line by line off a real socket."""

    def __init__(self, base_url: str, query: str = "", last_event_id: int | None = None,
                 timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", "/api/events" + (f"?{query}" if query else ""), headers=headers)
        self.response = self.conn.getresponse()
        assert self.response.status == 200, (self.response.status, self.response.read())
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")

    def next_event(self) -> SseEvent:
        """The next event (comments and retry lines skipped); raises TimeoutError if none comes."""
        fields: dict[str, str] = {}
        while True:
            raw = self.response.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    # The id is P, or P.K for a position's earlier events: keep P.
                    position = int(fields.get("id", "0").partition(".")[0])
                    return SseEvent(position, fields.get("event", "message"),
                                    orjson.loads(fields["data"]))
                fields = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[key] = fields[key] + "\n" + value if key == "data" and key in fields else value

    def events_until(self, predicate: Callable[[SseEvent], bool], limit: int = 100_000) -> list[SseEvent]:
        """Events up to and including the first one that satisfies ``predicate``."""
        out: list[SseEvent] = []
        while len(out) < limit:
            ev = self.next_event()
            out.append(ev)
            if predicate(ev):
                return out
        raise AssertionError(f"no matching event within {limit}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SseStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- a TCP proxy we can cut ----------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` is an outage, ``restore()`` ends it.

    The shared PostgreSQL cannot be stopped without hurting other test runs,
    so relays under test reach it through this proxy instead. A cut closes
    every open connection and then refuses new ones (accept and close at
    once), which is what clients see when the server goes away.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close(src)
        _close(dst)

    def cut(self) -> None:
        """PostgreSQL "goes away": open connections drop, new ones are refused."""
        self.up = False
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a)
            _close(b)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self.listener)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
