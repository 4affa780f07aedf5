"""Shared pieces of the benchmarks: a relay in its own process, HTTP timing, CPU accounting.

Why a child process: the figures must be what a user sees (a real listening
socket, real files, a process that starts from nothing), and the load
generator must not share the server's interpreter or GIL.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
_URL_LINE = re.compile(r"relay listening on (http://\S+)")
_LOAD_LINE = re.compile(r"read models at position (\d+) \((.*)\) in ([0-9.]+) s")
_TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """``relay serve`` on a free loopback port; records how long it took to listen."""

    def __init__(self, data_dir: Path, log_level: str = "WARNING", extra: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.log_level = log_level
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.output: list[str] = []
        self.started_at = 0.0  # perf_counter just before the process was spawned
        self.listening_after = 0.0  # seconds from spawn to the URL line
        self._ready = threading.Event()

    def start(self, timeout: float = 120.0) -> Server:
        args = [
            sys.executable, "-m", "relay", "serve",
            "--host", "127.0.0.1", "--port", "0", "--data", str(self.data_dir),
            "--log-level", self.log_level, *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env["PYTHONUNBUFFERED"] = "1"
        self._ready.clear()
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError("relay did not start:\n" + "".join(self.output[-40:]))
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            m = _URL_LINE.search(line)
            if m and not self.url:
                self.listening_after = time.perf_counter() - self.started_at
                self.url = m.group(1).rstrip("/")
                self._ready.set()
        self._ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def load_line(self) -> tuple[int, str, float] | None:
        """(position, how, seconds) from the server's "read models at ..." log line."""
        for line in self.output:
            m = _LOAD_LINE.search(line)
            if m:
                return int(m.group(1)), m.group(2), float(m.group(3))
        return None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the relay writes its read-model checkpoint on the way out)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Conn:
    """One keep-alive connection that times each request (client-side latency)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, float]:
        headers = {}
        raw = None
        if body is not None:
            raw = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        self.conn.request(method, path, body=raw, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - t0

    def ok(self, method: str, path: str, body: Any = None) -> bytes:
        status, data, _ = self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path} -> {status}: {data[:200]!r}")
        return data

    def close(self) -> None:
        self.conn.close()


def log_head(data_dir: Path) -> int:
    """The newest log position in a relay's SQLite file (read-only, beside a running relay)."""
    db = data_dir / "relay.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (head,) = con.execute("SELECT MAX(rowid) FROM stored_events").fetchone()
    return int(head or 0)


def settled_head(data_dir: Path, quiet: float = 0.3, limit: float = 10.0) -> int:
    """The log head once it has stopped moving for ``quiet`` seconds (in-flight writes landed)."""
    deadline = time.perf_counter() + limit
    head = log_head(data_dir)
    still_since = time.perf_counter()
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        now = log_head(data_dir)
        if now != head:
            head, still_since = now, time.perf_counter()
        elif time.perf_counter() - still_since >= quiet:
            break
    return head


def count_topic(data_dir: Path, topic: str, after: int, upto: int) -> int:
    """How many events with ``topic`` sit in (after, upto] (the log also holds other kinds, e.g. seals)."""
    db = data_dir / "relay.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        (n,) = con.execute(
            "SELECT COUNT(*) FROM stored_events WHERE rowid > ? AND rowid <= ? AND topic = ?",
            (after, upto, topic),
        ).fetchone()
    return int(n)


def stored_sizes(data_dir: Path, topic: str, limit: int = 1000) -> list[int]:
    """Bytes of stored state+topic for the newest events with ``topic``."""
    db = data_dir / "relay.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT LENGTH(state) + LENGTH(topic) FROM stored_events WHERE topic = ? "
            "ORDER BY rowid DESC LIMIT ?",
            (topic, limit),
        ).fetchall()
    return [int(r[0]) for r in rows]


def register_orchestrators(
    port: int, count: int, managed: int = 0, prefix: str = "o"
) -> list[str]:
    """``count`` orchestrators over HTTP, each optionally reporting ``managed`` agents."""
    conn = Conn(port)
    ids = [f"{prefix}{i}" for i in range(count)]
    try:
        for i, oid in enumerate(ids):
            conn.ok(
                "POST",
                "/api/orchestrators",
                {"id": oid, "hostname": f"host-{i:05d}", "baseDir": "/srv/work"},
            )
            if managed:
                agents = [
                    {
                        "agentId": f"{oid}-agent-{k}",
                        "provider": "claude" if k % 2 else "codex",
                        "tmuxSession": f"relay-{oid}-{k}",
                        "cwd": f"/srv/work/project-{k}",
                        "label": f"task {k}",
                        "approvalMode": "guarded",
                        "pid": 10_000 + k,
                        "startedAt": 1_700_000_000_000 + k,
                    }
                    for k in range(managed)
                ]
                conn.ok("PATCH", f"/api/orchestrators/{oid}/agents", {"agents": agents})
    finally:
        conn.close()
    return ids


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    """One line about where the figures come from."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    v = sys.version_info
    return f"{os.cpu_count()} cores ({model or 'unknown cpu'}), Python {v.major}.{v.minor}.{v.micro}"


def load_average() -> str:
    """The 1-minute load average: other work on the machine shows up in every figure."""
    return f"{os.getloadavg()[0]:.1f}"
