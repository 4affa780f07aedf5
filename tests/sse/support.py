"""A raw-socket SSE client for tests: HTTP/1.1 by hand, chunk by chunk.

Why not a library client: the tests need what a library hides. The relay
writes each log position's frames in one HTTP chunk, so a client that stops
between chunks stops between positions; tests disconnect there, stall on
purpose (a small receive buffer and no reads), and check comments and the
``retry:`` field, which EventSource implementations swallow.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from attrs import frozen


@frozen
class Event:
    """One dispatched SSE event."""

    id: str | None
    event: str
    data: str

    @property
    def position(self) -> int:
        """The log position of the id (``P`` or ``P.K``)."""
        assert self.id is not None, "event without an id"
        return int(self.id.partition(".")[0])

    @property
    def key(self) -> tuple[int, float]:
        """The id as an ordered pair: ``P.K`` is (P, K), a bare ``P`` is (P, inf) (it is
        the position's last event)."""
        assert self.id is not None, "event without an id"
        p, _, k = self.id.partition(".")
        return int(p), (int(k) if k else float("inf"))

    def json(self) -> Any:
        return json.loads(self.data)


class StreamEnded(Exception):
    """Raised when the relay ended the stream (or the connection broke)."""


class SseStream:
    """``GET /api/events`` on its own connection."""

    def __init__(
        self,
        base_url: str,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = 15.0,
    ) -> None:
        parts = urlsplit(base_url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting, so the advertised window is small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self._buf = b""
        self.ended = False
        path = "/api/events" + ("?" + urlencode(query) if query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body: Any = None
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            raw = self._read_exact(length)
            self.body = json.loads(raw) if raw else None
            self.close()
        # parser state (WHATWG: the last event id persists across events)
        self.last_id: str | None = None
        self.retry: int | None = None
        self.comments: list[str] = []
        self._event = ""
        self._data: list[str] = []
        self._lines = b""

    # -- bytes -------------------------------------------------------------------

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise StreamEnded(f"connection reset: {e}") from None
        if not data:
            raise StreamEnded("connection closed")
        return data

    def _read_until(self, sep: bytes) -> bytes:
        while sep not in self._buf:
            self._buf += self._recv()
        out, _, self._buf = self._buf.partition(sep)
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self._recv()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read_chunk(self, timeout: float | None = None) -> bytes:
        """The next HTTP chunk's payload; StreamEnded at the terminating chunk or EOF."""
        if self.ended:
            raise StreamEnded("already ended")
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self.ended = True
                raise StreamEnded("the relay ended the stream")
            payload = self._read_exact(size)
            self._read_exact(2)
        except StreamEnded:
            self.ended = True
            raise
        return payload

    # -- SSE ---------------------------------------------------------------------

    def feed(self, payload: bytes) -> list[Event]:
        """Parse ``payload``; returns the events it completed."""
        self._lines += payload
        out: list[Event] = []
        while b"\n" in self._lines:
            raw, _, self._lines = self._lines.partition(b"\n")
            line = raw.decode().rstrip("\r")
            if line == "":
                if self._data:
                    out.append(Event(self.last_id, self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self.last_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        return out

    def next_events(self, timeout: float | None = None) -> list[Event]:
        """The events of the next chunk (possibly none: a comment or ``retry:``)."""
        return self.feed(self.read_chunk(timeout))

    def read_until_position(self, position: int, timeout: float = 15.0) -> list[Event]:
        """Everything up to and including the chunk that holds ``position``."""
        deadline = time.monotonic() + timeout
        out: list[Event] = []
        while not out or out[-1].id is None or out[-1].position < position:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"position {position} did not arrive; got {len(out)} events")
            out.extend(self.next_events(left))
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> SseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
