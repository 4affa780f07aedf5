"""Fixtures for live output: a real relay, a real host daemon, real tmux, a printing provider.

Viewers are raw sockets read by a thread (so a test can also hold one that
never reads); counting happens at the relay (``/metrics``), and every wait is
a condition polled against a deadline.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.host.conftest import HostWorld, Tmux, wait_for
from tests.host.conftest import _tmux_present_when_required as _tmux_present_when_required
from tests.host.conftest import tmux_socket as tmux_socket

PRINTER = Path(__file__).with_name("printer.py")
OUTPUT_ROUTE = "/api/orchestrators/{id}/output"


class OutputWorld(HostWorld):
    """A ``HostWorld`` whose providers print (``printer.py``) instead of heartbeating."""

    def host_args(self, providers: Sequence[str] = ("claude", "codex")) -> list[str]:
        args = super().host_args(providers)
        command = shlex.join([sys.executable, str(PRINTER)])
        out = []
        for i, arg in enumerate(args):
            if i > 0 and args[i - 1] == "--provider":
                arg = arg.partition("=")[0] + "=" + command
            out.append(arg)
        return out

    def spawn_printer(self, agent_id: str, prompt: str = "tick 0.2") -> str:
        """Spawn a printer as ``agent_id`` and wait until the relay lists it running."""
        cid = self.api.spawn(self.oid, provider="claude", cwd="proj", label=agent_id, prompt=prompt)
        cmd = self.api.settled(self.oid, cid)
        assert cmd["status"] == "done", (cmd, self.host_log())
        aid = str(cmd["result"]["agentId"])
        wait_for(lambda: any(m["agentId"] == aid for m in self.managed()), 20, f"{aid} managed")
        return aid

    def pushes(self) -> int:
        """Output pushes the relay has answered (any status), from its own counters."""
        return metric(self.relay.url, OUTPUT_ROUTE, "POST", self.token)

    def viewer(self, agent_id: str, **kw: Any) -> SseViewer:
        path = f"/api/orchestrators/{self.oid}/agents/{agent_id}/output"
        return SseViewer(self.relay.url, path, self.token, **kw)


def metric(base_url: str, route: str, method: str, token: str | None = None) -> int:
    """The sum of ``relay_http_requests_total`` for one route and method, any status."""
    request = urllib.request.Request(base_url + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    pattern = re.compile(r'^relay_http_requests_total\{(.*)\} ([0-9.e+]+)$', re.M)
    for labels, value in pattern.findall(text):
        if f'route="{route}"' in labels and f'method="{method}"' in labels:
            total += float(value)
    return int(total)


class SseViewer:
    """A viewer on a raw socket: a thread reads and parses events into ``events``.

    ``read=False`` makes a viewer that never reads (with a small receive
    buffer), as a stuck browser tab would be.
    """

    def __init__(
        self, base_url: str, path: str, token: str | None = None, read: bool = True,
        query_token: bool = False,
    ) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.sock = socket.socket()
        if not read:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        target = path + (f"?token={token}" if token and query_token else "")
        head = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        if token and not query_token:
            head += f"Authorization: Bearer {token}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        self.status: int | None = None
        self.headers = ""
        self.events: list[tuple[str, Any]] = []
        self.raw = b""
        self._at = 0  # how far self.raw has been unchunked
        self._body = b""  # unchunked, not yet a whole event
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        if read:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        head = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                if self.status is None:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    head, _, data = head.partition(b"\r\n\r\n")
                    self.headers = head.decode(errors="replace")
                    self.status = int(self.headers.split()[1])
                self.raw += data
                if self.status == 200:
                    self._parse()
        except OSError:
            pass
        finally:
            self.closed.set()

    def _parse(self) -> None:
        """Take whole chunks, then whole events, off what has arrived (incrementally)."""
        while True:
            end = self.raw.find(b"\r\n", self._at)
            if end < 0:
                break
            size = int(self.raw[self._at : end].split(b";")[0], 16)
            if end + 2 + size + 2 > len(self.raw):
                break
            self._body += self.raw[end + 2 : end + 2 + size].replace(b"\r\n", b"\n")
            self._at = end + 2 + size + 2
        blocks = self._body.split(b"\n\n")
        self._body = blocks.pop()
        for block in blocks:
            name, data = "message", []
            for line in block.decode().split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            if data:
                with self._lock:
                    self.events.append((name, json.loads("\n".join(data))))

    def error(self) -> Any:
        """The JSON body of a refused stream."""
        wait_for(lambda: self.closed.is_set() or (self.status not in (None, 200) and self.raw),
                 10, "an answer")
        body = self.raw
        if "chunked" in self.headers.lower():
            body = _unchunk(body)
        return json.loads(body)

    def named(self, name: str) -> list[Any]:
        with self._lock:
            return [data for event, data in self.events if event == name]

    def text(self) -> str:
        """Everything shown so far: the last snapshot and the output after it."""
        with self._lock:
            events = list(self.events)
        out = ""
        for name, data in events:
            if name == "snapshot":
                out = data["data"]
            elif name == "output":
                out += data["data"]
        return out

    def wait(self, check: Any, what: str, timeout: float = 15.0) -> Any:
        return wait_for(check, timeout, what)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.thread is not None:
            self.thread.join(5)


def _unchunk(raw: bytes) -> bytes:
    """The payload of a chunked body received so far (a partial last chunk is left out)."""
    out = []
    i = 0
    while True:
        end = raw.find(b"\r\n", i)
        if end < 0:
            break
        try:
            size = int(raw[i:end].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0 or end + 2 + size > len(raw):
            break
        out.append(raw[end + 2 : end + 2 + size])
        i = end + 2 + size + 2
    return b"".join(out)


@pytest.fixture
def world(tmp_path: Path, tmux_socket: Tmux) -> Iterator[OutputWorld]:
    """A running relay (1 s keep-alive, a heartbeat a second); the daemon is started by the test."""
    w = OutputWorld(tmp_path, tmux_socket, relay_args=["--keepalive", "1", "--stale-after", "3"])
    w.relay.start()
    yield w
    w.close()

