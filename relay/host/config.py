"""Host configuration: providers, the env file, base-dir checks and listing.

Everything here is parsed once at start into frozen values so the daemon's
loops never read ``os.environ`` or re-parse options while running.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_PROVIDERS = ("claude", "codex")
APPROVAL_MODES = ("open", "guarded", "read-only")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ID = re.compile(r"[^\s/]{1,120}")


class HostConfigError(ValueError):
    """Raised when an option or the env file cannot be used as given."""


@dataclass(frozen=True)
class HostConfig:
    """What ``relay host`` was told to do, after validation."""

    relay_url: str
    orchestrator_id: str
    hostname: str
    base_dir: Path
    providers: Mapping[str, tuple[str, ...]]
    state_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    agent_base_env: Mapping[str, str] = field(default_factory=dict)
    admin_token: str | None = None
    tmux_socket: str | None = None
    stale_after: float = 90.0
    check_every: float = 5.0
    max_backoff: float = 30.0
    poll_every: float = 2.0
    max_dirs: int = 500

    @property
    def heartbeat_every(self) -> float:
        """A third of the relay's stale-after, so two lost beats never make us stale."""
        return max(self.stale_after / 3.0, 0.2)

    @property
    def env_keys(self) -> list[str]:
        """Names from the env file only; their values never leave this host."""
        return sorted(self.env)


def parse_provider(spec: str) -> tuple[str, tuple[str, ...]]:
    """Split ``NAME=COMMAND`` into the name and the argv (shlex, never a shell)."""
    name, sep, command = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise HostConfigError(f"--provider {spec!r}: expected NAME=COMMAND, e.g. claude=claude")
    if name not in KNOWN_PROVIDERS:
        raise HostConfigError(
            f"--provider {name!r}: unknown provider; use one of {', '.join(KNOWN_PROVIDERS)}"
        )
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise HostConfigError(f"--provider {name}: cannot split the command: {exc}") from exc
    if not argv:
        raise HostConfigError(f"--provider {name}: the command is empty")
    return name, argv


def parse_providers(specs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Parse every ``--provider``; naming one twice is a mistake worth stopping for."""
    providers: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, argv = parse_provider(spec)
        if name in providers:
            raise HostConfigError(f"--provider {name} is given twice")
        providers[name] = argv
    if not providers:
        raise HostConfigError("at least one --provider NAME=COMMAND is needed")
    return providers


def parse_env_text(text: str, source: str = "env file") -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``#`` comments, ``export``, quotes) without a shell."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY.fullmatch(key):
            raise HostConfigError(f"{source} line {number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def read_env_file(path: Path | None) -> dict[str, str]:
    """Read the env file whose values the agents get; none means no extra values."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HostConfigError(f"--env-file {path}: {exc.strerror or exc}") from exc
    return parse_env_text(text, source=str(path))


def agent_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The daemon's environment minus its own settings, as the base for agents.

    ``RELAY_*`` (``RELAY_TOKEN`` above all) configures the daemon and must not
    leak into agents by inheritance; an agent that needs a relay token gets
    one only when the env file names it.
    """
    return {
        k: v for k, v in environ.items()
        if not k.startswith(("RELAY_", "TMUX")) and k not in ("TERM", "COLORTERM")
    }


# The relay's rule: its agent id ``orchestrator-<id>`` must fit 120 characters too.
MAX_ORCHESTRATOR_ID = 120 - len("orchestrator-")


def check_id(value: str, option: str, max_len: int = 120) -> str:
    """Ids follow the relay's rule (1-120 printable, no ``/`` or whitespace)."""
    if not _ID.fullmatch(value) or not value.isprintable() or len(value) > max_len:
        raise HostConfigError(
            f"{option} {value!r}: 1-{max_len} printable characters without / or spaces"
        )
    return value


def resolve_inside(base_dir: Path, cwd: str | None) -> Path:
    """The real path of ``cwd`` if it lies inside the real ``base_dir``, else raise.

    The relay checks the path lexically; only the host can resolve symlinks,
    so this is the check that stops ``base/link -> /etc`` from escaping.
    """
    base_real = Path(os.path.realpath(base_dir))
    requested = Path(cwd) if cwd else base_dir
    if not requested.is_absolute():
        requested = base_dir / requested
    real = Path(os.path.realpath(requested))
    if real != base_real and not real.is_relative_to(base_real):
        raise HostConfigError(
            f"cwd {str(requested)!r} resolves to {str(real)!r}, which is outside "
            f"the base dir {str(base_real)!r}"
        )
    if not real.is_dir():
        raise HostConfigError(f"cwd {str(requested)!r} is not an existing directory on this host")
    return real


def as_registered(base_dir: Path, cwd: str) -> str:
    """``cwd`` written under ``base_dir`` as the host registered it, when it is inside.

    The host starts agents in resolved paths; the relay checks a reported cwd
    against the registered baseDir by path components, without symlinks. So a
    base dir reached through a symlink reports ``<base-dir>/<rest>``.
    """
    base_real = Path(os.path.realpath(base_dir))
    path = Path(cwd)
    inside_registered = path == base_dir or path.is_relative_to(base_dir)
    inside_real = path == base_real or path.is_relative_to(base_real)
    if path.is_absolute() and inside_real and not inside_registered:
        return str(base_dir / path.relative_to(base_real))
    return cwd


def list_dirs(base_dir: Path, limit: int = 500) -> tuple[list[str], bool]:
    """Directories up to two levels under ``base_dir`` (relative, sorted, capped).

    Bounded so a huge base dir never makes a huge registration; hidden
    directories are skipped because they are rarely where an agent should work.
    Returns the listing and whether it was cut short.
    """
    found: list[str] = []

    def children(path: Path) -> list[Path]:
        try:
            entries = [e for e in path.iterdir() if not e.name.startswith(".")]
        except OSError:
            return []
        return sorted((e for e in entries if _is_dir(e)), key=lambda e: e.name)

    for first in children(base_dir):
        found.append(first.name)
        if len(found) >= limit:
            return found, True
        for second in children(first):
            found.append(f"{first.name}/{second.name}")
            if len(found) >= limit:
                return found, True
    return found, False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def default_state_path(orchestrator_id: str, environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/relay/host-<id>.json`` (``~/.local/state`` when unset)."""
    root = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state"
    )
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", orchestrator_id)
    return Path(root) / "relay" / f"host-{safe}.json"
