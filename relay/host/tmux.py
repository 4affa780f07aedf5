"""The tmux runner: detached sessions for agents, looked up and killed by name.

Every tmux call goes through ``asyncio.create_subprocess_exec`` with an argv
list, so no shell ever parses a label, a path or a prompt. A dedicated socket
(``tmux -L NAME``) keeps a host's agents (and each test's) apart from the
user's own tmux sessions.

Every tmux client runs with a clean environment (``config.tmux_env``): the
client that happens to start the server gives it its environment, which tmux
keeps as the global one and hands to every pane (ADR 0017).

Sessions keep their pane after the program exits (``remain-on-exit``), so the
daemon can read the exit status and the last lines printed before it closes
the session: an agent that dies at once leaves a reason, not just a gap.

Text an operator types into an agent goes in with ``send-keys -l`` (ADR 0033):
literal keys, never key names (``C-c`` is three characters) and never a shell.
tmux still reads its own argv for one thing, a trailing ``;`` (a command
separator; ``\\;`` is a literal one), so ``send_text`` escapes exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.host import launch
from relay.host.config import environment, tmux_env

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# tmux says this (or cannot connect) when no session exists on the socket yet.
_NO_SERVER = (
    "no server running", "error connecting to", "no sessions", "server exited unexpectedly"
)


class TmuxError(RuntimeError):
    """Raised when tmux refuses a command or is not installed."""


def session_name(label: str | None, provider: str, command_id: str) -> str:
    """``relay-<label>-<id8>``: readable in ``tmux ls``, unique per command.

    tmux forbids ``.`` and ``:`` in names; anything unusual becomes ``-``.
    """
    base = _UNSAFE.sub("-", label or provider).strip("-")[:40] or provider
    suffix = _UNSAFE.sub("", command_id)[:8] or "x"
    return f"relay-{base}-{suffix}"


# tmux hands a client's argv to its server in one message of at most 16 KiB; a
# chunk of this many characters stays well inside it whatever their UTF-8 size.
SEND_CHUNK = 1000


def literal_arg(text: str) -> str:
    """``text`` as a ``send-keys -l`` argument that tmux types exactly.

    tmux takes an argument ending in ``;`` as the end of a command (the ``;``
    dropped) and one ending in ``\\;`` as ending in ``;`` (the backslash
    dropped); nothing else in an argument is special to it. So only a
    trailing ``;`` needs a backslash before it.
    """
    return text[:-1] + "\\;" if text.endswith(";") else text


@dataclass(frozen=True)
class PaneActivity:
    """A session's pane as the attention watcher sees it (relay/host/attention.py)."""

    activity: int  # epoch seconds of the window's last output (tmux's window_activity)
    dead: bool
    pid: int | None


@dataclass(frozen=True)
class PaneState:
    """A session's (first) pane: its pid and, once its program exited, the status."""

    pid: int | None
    dead: bool
    status: int | None
    signal: int | None = None


@dataclass(frozen=True)
class PanePipe:
    """A session's (first) pane as output taps see it."""

    pane_id: str
    piped: bool
    dead: bool


@dataclass(frozen=True)
class Screen:
    """What a pane shows: lines (history, then the screen's rows), cursor and size."""

    lines: list[str]
    cursor_x: int
    cursor_y: int
    cols: int
    rows: int
    alternate: bool


class Tmux:
    """A thin async wrapper over the ``tmux`` binary on one socket."""

    def __init__(
        self,
        socket: str | None = None,
        binary: str = "tmux",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.socket = socket
        self.env = dict(tmux_env(environment()) if env is None else env)
        self.binary = shutil.which(binary) or binary

    def available(self) -> bool:
        """True when the tmux binary can be found on PATH."""
        return shutil.which(self.binary) is not None

    async def _run(self, *args: str) -> tuple[int, str, str]:
        argv = [self.binary]
        if self.socket:
            argv += ["-L", self.socket]
        argv += list(args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise TmuxError(f"tmux is not installed ({self.binary!r} not found)") from exc
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def sessions(self) -> set[str]:
        """Names of live sessions; empty when the tmux server is not running."""
        code, out, err = await self._run("list-sessions", "-F", "#{session_name}")
        if code != 0:
            if any(s in err for s in _NO_SERVER):
                return set()
            raise TmuxError(f"tmux list-sessions failed: {err.strip()}")
        return {line for line in out.splitlines() if line}

    async def has_session(self, name: str) -> bool:
        """True when a session with exactly this name exists."""
        return name in await self.sessions()

    async def panes(self) -> dict[str, PaneState]:
        """Every session's first pane: pid, whether its program exited, and how."""
        code, out, err = await self._run(
            "list-panes", "-a", "-F",
            "#{session_name}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}",
        )
        if code != 0:
            if any(s in err for s in _NO_SERVER):
                return {}
            raise TmuxError(f"tmux list-panes failed: {err.strip()}")
        found: dict[str, PaneState] = {}
        for line in out.splitlines():
            name, pid, dead, status, sig = [*line.split("\t"), "", "", "", ""][:5]
            if name and name not in found:
                found[name] = PaneState(
                    pid=int(pid) if pid.isdigit() else None,
                    dead=dead == "1",
                    status=int(status) if status.lstrip("-").isdigit() else None,
                    signal=int(sig) if sig.isdigit() else None,
                )
        return found

    async def activity(self) -> dict[str, PaneActivity]:
        """Every session's last output time, in one call: what idle detection polls."""
        code, out, err = await self._run(
            "list-panes", "-a", "-F", "#{session_name}\t#{window_activity}\t#{pane_dead}\t#{pane_pid}",
        )
        if code != 0:
            if any(s in err for s in _NO_SERVER):
                return {}
            raise TmuxError(f"tmux list-panes failed: {err.strip()}")
        found: dict[str, PaneActivity] = {}
        for line in out.splitlines():
            name, activity, dead, pid = [*line.split("\t"), "", "", ""][:4]
            if name and name not in found and activity.isdigit():
                found[name] = PaneActivity(
                    activity=int(activity), dead=dead == "1", pid=int(pid) if pid.isdigit() else None
                )
        return found

    async def send_text(self, name: str, text: str, enter: bool = True) -> None:
        """Type ``text`` into the session's pane literally, then Enter unless ``enter`` is False.

        ``-l``: every character is a key of its own, never a key name; the
        text never passes through a shell (argv, ``create_subprocess_exec``).
        """
        target = f"={name}:"
        for i in range(0, len(text), SEND_CHUNK):
            chunk = literal_arg(text[i : i + SEND_CHUNK])
            code, _, err = await self._run("send-keys", "-t", target, "-l", "--", chunk)
            if code != 0:
                raise TmuxError(f"tmux send-keys failed: {err.strip()}")
        if enter:
            code, _, err = await self._run("send-keys", "-t", target, "Enter")
            if code != 0:
                raise TmuxError(f"tmux send-keys failed: {err.strip()}")

    async def last_lines(self, name: str, count: int = 20) -> list[str]:
        """The last non-blank lines the session's pane shows (tmux's own note dropped)."""
        code, out, _ = await self._run(
            "capture-pane", "-p", "-J", "-t", f"={name}:", "-S", f"-{max(count, 1) * 5}",
        )
        if code != 0:
            return []
        lines = [
            line.rstrip() for line in out.splitlines()
            if line.strip() and not line.startswith("Pane is dead")
        ]
        return lines[-count:]

    async def pipes(self) -> dict[str, PanePipe]:
        """Every session's first pane: its id, whether it is piped, whether it ended."""
        code, out, err = await self._run(
            "list-panes", "-a", "-F", "#{session_name}\t#{pane_id}\t#{pane_pipe}\t#{pane_dead}",
        )
        if code != 0:
            if any(s in err for s in _NO_SERVER):
                return {}
            raise TmuxError(f"tmux list-panes failed: {err.strip()}")
        found: dict[str, PanePipe] = {}
        for line in out.splitlines():
            name, pane_id, piped, dead = [*line.split("\t"), "", "", ""][:4]
            if name and name not in found:
                found[name] = PanePipe(pane_id, piped == "1", dead == "1")
        return found

    async def pipe_pane(self, name: str, command: str | None) -> None:
        """Pipe what the session's pane prints into ``command`` (a shell command tmux
        runs, ``#`` formats expanded); None closes the pipe."""
        target = f"={name}:"
        args = ["pipe-pane", "-O", "-t", target, command] if command else ["pipe-pane", "-t", target]
        code, _, err = await self._run(*args)
        if code != 0:
            raise TmuxError(f"tmux pipe-pane failed: {err.strip()}")

    async def screen(self, name: str, history: int) -> Screen:
        """The pane as it looks: up to ``history`` lines above the screen and the screen
        itself, with colour escapes (``capture-pane -e``), and the cursor; one tmux call."""
        target = f"={name}:"
        code, out, err = await self._run(
            "capture-pane", "-p", "-e", "-t", target, "-S", f"-{max(history, 0)}", ";",
            "display-message", "-p", "-t", target,
            "#{cursor_x} #{cursor_y} #{pane_width} #{pane_height} #{alternate_on}",
        )
        if code != 0:
            raise TmuxError(f"tmux capture-pane failed: {err.strip()}")
        body, _, last = out.rstrip("\n").rpartition("\n")
        numbers = last.split()
        if len(numbers) != 5 or not all(n.isdigit() for n in numbers):
            raise TmuxError(f"tmux display-message answered {last[:80]!r}")
        cx, cy, cols, rows, alternate = (int(n) for n in numbers)
        return Screen(body.split("\n") if body else [], cx, cy, cols, rows, alternate == 1)

    async def pane_pid(self, name: str) -> int | None:
        """The pid of the session's process (the provider, after the shim's exec)."""
        code, out, _ = await self._run("list-panes", "-t", f"={name}", "-F", "#{pane_pid}")
        if code != 0:
            return None
        for line in out.splitlines():
            if line.strip().isdigit():
                return int(line.strip())
        return None

    async def start(
        self,
        name: str,
        cwd: Path,
        argv: Sequence[str],
        env: Mapping[str, str],
        spec_dir: Path,
        base: Path | None = None,
    ) -> int | None:
        """Start ``argv`` in a new detached session; returns its pid if known.

        ``env`` is the program's whole environment (plus what tmux sets for
        the pane, such as ``TERM``). The argv and env go to the launch shim
        through a private spec file. ``cwd`` must be a resolved path inside
        ``base``: the shim enters it without following any symlink and
        refuses (exit 126) if it is not there any more. tmux itself starts in
        ``base``, never in a path the relay chose.
        """
        if await self.has_session(name):
            raise TmuxError(f"a tmux session named {name!r} already exists")
        spec_dir.mkdir(parents=True, exist_ok=True)
        fd, spec_path = tempfile.mkstemp(prefix="launch-", suffix=".json", dir=spec_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({
                "argv": list(argv), "env": dict(env), "cwd": str(cwd),
                "base": str(base if base is not None else cwd),
            }, fh)
        shim = [sys.executable, "-I", os.path.abspath(launch.__file__), spec_path]
        start_dir = str(base if base is not None else cwd)
        for _ in range(3):
            # One tmux command list: the option is set before the server
            # handles the child's exit, so even an instant exit is kept.
            code, _, err = await self._run(
                "new-session", "-d", "-s", name, "-c", start_dir, "-x", "200", "-y", "50",
                "--", *shim, ";", "set-option", "-p", "-t", f"={name}:", "remain-on-exit", "on",
            )
            # A server that is exiting (its last session just ended) can refuse
            # a new client; the next try starts a fresh server.
            if code == 0 or "server exited unexpectedly" not in err:
                break
        if code != 0:
            with contextlib.suppress(OSError):
                os.unlink(spec_path)
            raise TmuxError(f"tmux new-session failed: {err.strip()}")
        return await self.pane_pid(name)

    async def kill(self, name: str) -> bool:
        """Kill the session (its processes get SIGHUP); False when it was already gone."""
        code, _, err = await self._run("kill-session", "-t", f"={name}")
        if code == 0:
            return True
        # tmux words "already gone" in several ways depending on whether the
        # server is still up or just exiting; ask instead of matching them all.
        if not await self.has_session(name):
            return False
        raise TmuxError(f"tmux kill-session failed: {err.strip()}")

    async def scrub_global_env(self) -> list[str]:
        """Unset global variables a running server has beyond the clean list.

        A server started before the daemon ran tmux with a clean environment
        (an older version, or a person's own ``tmux -L relay``) may hold a
        token; new panes must not see it there. Returns the names removed.
        """
        code, out, _ = await self._run("show-environment", "-g")
        if code != 0:
            return []  # no server yet: the next client starts a clean one
        extra = []
        for line in out.splitlines():
            name = line.lstrip("-").partition("=")[0]
            # tmux itself puts PWD there when it starts.
            if name and name not in self.env and name not in (*launch.PANE_VARS, "PWD"):
                extra.append(name)
        for name in extra:
            await self._run("set-environment", "-g", "-u", name)
        return extra

    async def kill_server(self) -> None:
        """Stop this socket's tmux server (tests use it to clean up)."""
        await self._run("kill-server")
