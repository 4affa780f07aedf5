"""A real relay in a child process, for tests that talk to it over a real socket.

Why a child process: tests must see what users see (a real listening socket,
real files in a data folder, real signals such as ``kill -9``), and a server
in its own process can be killed without taking the test run with it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

_URL_LINE = re.compile(r"relay listening on (http://\S+)")


class RelayProcess:
    """``relay serve`` on a free loopback port with its own data folder."""

    def __init__(
        self,
        data_dir: Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        store: str | None = None,
        postgres_dsn: str | None = None,
    ) -> None:
        """``store``: ``sqlite`` or ``postgres``; unset, ``RELAY_TEST_STORE`` decides
        (default sqlite). On PostgreSQL without ``postgres_dsn`` the log is a fresh
        schema of ``RELAY_TEST_POSTGRES_DSN``'s server, one per data folder."""
        self.data_dir = Path(data_dir)
        self.store = store or os.environ.get("RELAY_TEST_STORE") or "sqlite"
        self.postgres_dsn = postgres_dsn
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self) -> RelayProcess:
        """Start the server and wait until it prints the URL it listens on."""
        args = [
            sys.executable, "-m", "relay", "serve",
            "--host", "127.0.0.1", "--port", "0", "--data", str(self.data_dir),
            *self._store_args(),
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        self._ready.clear()
        self.url = ""
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(self.startup_timeout) or not self.url:
            self.kill()
            raise RuntimeError("relay did not start:\n" + "".join(self.output[-50:]))
        return self

    def _store_args(self) -> list[str]:
        if self.store != "postgres":
            return []
        if self.postgres_dsn is None:
            from tests.support.postgres import dsn_for_data_dir

            self.postgres_dsn = dsn_for_data_dir(self.data_dir)
        return ["--store", "postgres", "--postgres-dsn", self.postgres_dsn]

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            m = _URL_LINE.search(line)
            if m and not self.url:
                self.url = m.group(1).rstrip("/")
                self._ready.set()
        self._ready.set()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as an operator would; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._close_pipe()
        return code

    def _close_pipe(self) -> None:
        # The pump reads until EOF, which comes once the process is gone.
        if self.proc is not None and self.proc.stdout is not None:
            self._pump_thread.join(5)
            self.proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipe()

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
