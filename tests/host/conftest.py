"""Fixtures for the host daemon: a real relay, a real daemon, real tmux on its own socket.

Each test gets its own tmux socket (``tmux -L``) and folders, so tests never
see each other's sessions, and the socket's server is killed afterwards.
Waiting is always a condition polled against a deadline.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.server import RelayProcess

STUB = Path(__file__).with_name("stub_provider.py")
T = TypeVar("T")

# CI sets RELAY_REQUIRE_TMUX=1: there a missing tmux is a failure, not a skip.
TMUX_REQUIRED = bool(os.environ.get("RELAY_REQUIRE_TMUX"))
requires_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and not TMUX_REQUIRED,
    reason="tmux is not installed (apt-get install tmux)",
)


@pytest.fixture(autouse=True)
def _tmux_present_when_required() -> None:
    """Fail loudly, not by a confusing daemon error, when CI lacks tmux."""
    if TMUX_REQUIRED and shutil.which("tmux") is None:
        pytest.fail("RELAY_REQUIRE_TMUX is set but tmux is not installed (apt-get install tmux)")


def wait_for(
    check: Callable[[], T], timeout: float = 20.0, what: str = "condition", every: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (OSError, ValueError, KeyError) as exc:  # the relay may be restarting
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(every)


def free_port() -> int:
    """A port that was free a moment ago (for restarting a relay on the same port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Relay(RelayProcess):
    """``RelayProcess`` that closes the child's stdout pipe once it reaches EOF.

    Without this every stopped relay leaves an unclosed pipe behind, which
    ``filterwarnings = error`` turns into a failure of whichever test is next.
    """

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        try:
            super()._pump(proc)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


class Api:
    """Tiny synchronous JSON client for the relay under test."""

    def __init__(self, relay: RelayProcess, token: str | None = None) -> None:
        self.relay = relay
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.relay.url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            return exc.code, json.loads(text) if text else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """A request that must succeed."""
        status, data = self.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, data)
        return data

    def orchestrator(self, oid: str) -> dict[str, Any] | None:
        """The orchestrator, or None while it is unknown."""
        status, data = self.call("GET", f"/api/orchestrators/{oid}")
        return data if status == 200 else None

    def commands(self, oid: str) -> dict[str, dict[str, Any]]:
        """All commands of ``oid`` by id."""
        data = self.ok("GET", f"/api/orchestrators/{oid}/commands")
        if isinstance(data, dict):
            data = data.get("commands", [])
        return {c["id"]: c for c in data}

    def spawn(self, oid: str, **fields: Any) -> str:
        """Request a spawn; returns the command id."""
        data = self.ok("POST", f"/api/orchestrators/{oid}/spawn", fields)
        return str(data["command"]["id"])

    def act(self, oid: str, action: str, agent_id: str | None = None) -> str:
        """Request a restart or shutdown; returns the command id."""
        body: dict[str, Any] = {"action": action}
        if agent_id:
            body["agentId"] = agent_id
        data = self.ok("POST", f"/api/orchestrators/{oid}/actions", body)
        return str(data["command"]["id"])

    def settled(self, oid: str, command_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the command has a result; returns the command."""
        def check() -> dict[str, Any] | None:
            cmd = self.commands(oid).get(command_id)
            # "running" is the host's progress mark, not a result.
            return cmd if cmd and cmd.get("status") not in ("pending", "running") else None

        return wait_for(check, timeout, f"command {command_id} to settle")


class Tmux:
    """Looks at the test's own tmux socket."""

    def __init__(self, socket_name: str) -> None:
        self.socket = socket_name

    def sessions(self) -> set[str]:
        """Live session names on this socket."""
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "list-sessions", "-F", "#{session_name}"],
            capture_output=True, text=True, check=False,
        )
        return set(proc.stdout.split()) if proc.returncode == 0 else set()

    def kill_server(self) -> None:
        """Stop the socket's server and every session on it."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False)


class HostProcess:
    """``python -m relay.host`` in a child process, logging to a file."""

    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self, extra: Sequence[str] = (), env_extra: dict[str, str] | None = None
    ) -> HostProcess:
        """Start the daemon (``extra`` arguments appended, ``env_extra`` in its environment)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "TMUX"))}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(env_extra or {})
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay.host", *self.args, *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        finally:
            log.close()
        return self

    def log(self) -> str:
        """Everything the daemon logged so far (all runs)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self) -> None:
        """SIGKILL: no chance to save anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class HostWorld:
    """A relay, a base dir, an env file, a state file and a tmux socket for one test."""

    def __init__(
        self, root: Path, tmux: Tmux, relay_args: Sequence[str] = (), token: str | None = None
    ) -> None:
        self.root = root
        self.tmux = tmux
        self.base = root / "base"
        (self.base / "proj" / "sub").mkdir(parents=True)
        (self.base / "other").mkdir()
        self.stub_log = root / "stub.jsonl"
        self.env_file = root / "agents.env"
        self.env_file.write_text(
            f"# values for the agents\nSTUB_LOG={self.stub_log}\nexport STUB_SECRET='s3cr3t-value'\n"
        )
        self.state = root / "state" / "host.json"
        self.oid = f"host-{uuid.uuid4().hex[:8]}"
        self.token = token
        if token:
            relay_args = [*relay_args, "--token", token]
        self.relay = _Relay(root / "relay-data", extra_args=list(relay_args))
        self.api = Api(self.relay, token)
        self.hosts: list[HostProcess] = []

    def host_args(self, providers: Sequence[str] = ("claude", "codex")) -> list[str]:
        """The daemon's arguments; every provider runs the stub."""
        command = shlex.join([sys.executable, str(STUB)])
        args = [
            "--relay", self.relay.url, "--id", self.oid, "--hostname", f"{self.oid}.test",
            "--base-dir", str(self.base), "--env-file", str(self.env_file),
            "--state", str(self.state), "--tmux-socket", self.tmux.socket,
            "--stale-after", "3", "--check-every", "0.2", "--max-backoff", "0.5",
            "--start-grace", "0.5", "--log-level", "DEBUG",
        ]
        for name in providers:
            args += ["--provider", f"{name}={command}"]
        return args

    def start_host(
        self,
        providers: Sequence[str] = ("claude", "codex"),
        extra: Sequence[str] = (),
    ) -> HostProcess:
        """Start a daemon and wait until the relay lists this host online.

        The admin token, if any, reaches it as ``RELAY_TOKEN`` in its
        environment: the way that must not leak into agents.
        """
        env = {"HOST_MARKER": "from-the-daemon"}
        if self.token:
            env["RELAY_TOKEN"] = self.token
        host = HostProcess(self.host_args(providers), self.root / "host.log").start(
            extra, env_extra=env
        )
        self.hosts.append(host)
        self.wait_online()
        return host

    def wait_online(self) -> dict[str, Any]:
        """Wait until the orchestrator is registered and online."""
        def check() -> dict[str, Any] | None:
            o = self.api.orchestrator(self.oid)
            return o if o and o.get("status") == "online" else None

        return wait_for(check, 20, f"{self.oid} online\n{self.host_log()}")

    def host_log(self) -> str:
        """The daemon log, for failure messages."""
        path = self.root / "host.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def starts(self) -> list[dict[str, Any]]:
        """One record per provider process the stub saw start."""
        if not self.stub_log.exists():
            return []
        return [json.loads(line) for line in self.stub_log.read_text().splitlines() if line]

    def managed(self) -> list[dict[str, Any]]:
        """The managed agents the relay has for this host."""
        o = self.api.orchestrator(self.oid)
        return list(o.get("managedAgents") or []) if o else []

    def close(self) -> None:
        """Stop daemons, the relay and the tmux server."""
        for host in self.hosts:
            host.stop()
        self.relay.stop()
        self.tmux.kill_server()


@pytest.fixture
def tmux_socket() -> Iterator[Tmux]:
    """A private tmux socket, killed after the test."""
    tmux = Tmux(f"relay-test-{uuid.uuid4().hex[:10]}")
    yield tmux
    tmux.kill_server()


@pytest.fixture
def world(tmp_path: Path, tmux_socket: Tmux) -> Iterator[HostWorld]:
    """A running relay plus everything a daemon needs; the daemon is started by the test."""
    w = HostWorld(tmp_path, tmux_socket)
    w.relay.start()
    yield w
    w.close()


@pytest.fixture
def token_world(tmp_path: Path, tmux_socket: Tmux) -> Iterator[HostWorld]:
    """Like ``world``, with a relay that needs an admin token."""
    w = HostWorld(tmp_path, tmux_socket, token=f"admin-{uuid.uuid4().hex}")
    w.relay.start()
    yield w
    w.close()


@pytest.fixture
def fixed_port_world(tmp_path: Path, tmux_socket: Tmux) -> Iterator[HostWorld]:
    """Like ``world``, on a fixed port so the relay can be restarted where it was."""
    w = HostWorld(tmp_path, tmux_socket, relay_args=["--port", str(free_port())])
    w.relay.start()
    yield w
    w.close()
