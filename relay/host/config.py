"""Host configuration: providers, the env file, base-dir checks and listing.

Everything here is parsed once at start into frozen values so the daemon's
loops never read ``os.environ`` or re-parse options while running.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.domain.rules import MAX_ORCHESTRATOR_ID_CHARS

KNOWN_PROVIDERS = ("claude", "codex")
APPROVAL_MODES = ("open", "guarded", "read-only")

# What each approval mode means on the provider's own command line (ADR 0016).
# A host config may replace any of these per provider, or set a mode to
# ``false`` to refuse it there.
DEFAULT_APPROVAL_FLAGS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "claude": {
        "open": ("--permission-mode", "bypassPermissions"),
        "guarded": ("--permission-mode", "default"),
        "read-only": ("--permission-mode", "plan"),
    },
    "codex": {
        "open": ("--sandbox", "workspace-write", "--ask-for-approval", "never"),
        "guarded": ("--sandbox", "read-only", "--ask-for-approval", "on-request"),
        "read-only": ("--sandbox", "read-only", "--ask-for-approval", "never"),
    },
}

# How each provider resumes a session on its own command line (ADR 0034);
# ``{session}`` stands for the session id. ``--resume-args NAME=ARGS`` or a
# config file's ``resume`` replaces it per provider (``false``/empty: refused).
SESSION_PLACEHOLDER = "{session}"
DEFAULT_RESUME_ARGS: Mapping[str, tuple[str, ...]] = {
    "claude": ("--resume", SESSION_PLACEHOLDER),  # claude --resume <session-id>
    "codex": ("resume", SESSION_PLACEHOLDER),  # codex resume <session-id> (a subcommand)
}

# The only variables an agent (and the tmux server) gets from the daemon's own
# environment, unless a provider's ``pass_env`` names more (ADR 0017). TERM
# comes from tmux, which sets it for the pane.
BASE_ENV_KEYS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# tmux finds its socket folder through TMUX_TMPDIR: the daemon's tmux client
# must keep it or it would talk to another server than ``tmux -L`` does.
TMUX_ENV_KEYS = (*BASE_ENV_KEYS, "TMUX_TMPDIR")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The generic needs-input rule (ADR 0032): an agent quiet for --idle-after whose last
# lines match one of these asks a question; quiet without a match, it is idle.
# ``--input-pattern PROVIDER=REGEX`` replaces them for that provider.
DEFAULT_INPUT_PATTERNS = (
    r"\[[yY]/[nN]\]",
    r"\([yY]/[nN]\)",
    r"Proceed\?",
    r"Do you want",
    r"Continue\?",
)
_ID = re.compile(r"[^\s/]{1,120}")


class HostConfigError(ValueError):
    """Raised when an option or the env file cannot be used as given."""


@dataclass(frozen=True)
class ProviderConfig:
    """One provider on this host: its argv, its approval flags, the env it may see."""

    argv: tuple[str, ...]
    approval: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    pass_env: tuple[str, ...] = ()
    # The resume arguments with ``{session}`` in them; None: this host does not resume.
    resume: tuple[str, ...] | None = None

    def resume_args(self, name: str, session: str) -> tuple[str, ...]:
        """The arguments that resume ``session`` (already a checked id); raise when refused.

        A plain replacement, never ``str.format``: the template is the
        operator's, the id the requester's, and neither may reach further.
        """
        if self.resume is None:
            raise HostConfigError(
                f"provider {name!r} on this host does not resume sessions "
                "(no --resume-args for it)"
            )
        return tuple(arg.replace(SESSION_PLACEHOLDER, session) for arg in self.resume)

    def mode_flags(self, name: str, mode: str) -> tuple[str, ...]:
        """The flags that make the provider honour ``mode``; raise when it cannot."""
        flags = self.approval.get(mode)
        if flags is None:
            offered = ", ".join(m for m in APPROVAL_MODES if self.approval.get(m) is not None)
            raise HostConfigError(
                f"provider {name!r} on this host cannot honour approvalMode {mode!r} "
                f"(offered: {offered or 'none'})"
            )
        return flags


@dataclass(frozen=True)
class HostConfig:
    """What ``relay host`` was told to do, after validation."""

    relay_url: str
    orchestrator_id: str
    hostname: str
    base_dir: Path
    providers: Mapping[str, ProviderConfig]
    state_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    agent_base_env: Mapping[str, str] = field(default_factory=dict)
    provider_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    admin_token: str | None = None
    tmux_socket: str | None = None
    stale_after: float = 90.0
    check_every: float = 5.0
    max_backoff: float = 30.0
    poll_every: float = 2.0
    max_dirs: int = 500
    start_grace: float = 2.0
    # Needs-input (ADR 0032): quiet this long counts; 0 turns the generic rule off.
    idle_after: float = 30.0
    # Provider -> its patterns; a provider not named uses DEFAULT_INPUT_PATTERNS.
    input_patterns: Mapping[str, tuple[re.Pattern[str], ...]] = field(default_factory=dict)

    def patterns_for(self, provider: str) -> tuple[re.Pattern[str], ...]:
        """The patterns that make a quiet agent of ``provider`` one that asks a question."""
        found = self.input_patterns.get(provider)
        return found if found is not None else DEFAULT_PATTERNS

    @property
    def heartbeat_every(self) -> float:
        """A third of the relay's stale-after, so two lost beats never make us stale."""
        return max(self.stale_after / 3.0, 0.2)

    @property
    def env_keys(self) -> list[str]:
        """Names from the env file only; their values never leave this host."""
        return sorted(self.env)


def _split_command(name: str, command: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise HostConfigError(f"--provider {name}: cannot split the command: {exc}") from exc
    if not argv:
        raise HostConfigError(f"--provider {name}: the command is empty")
    return argv


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
    return name, _split_command(name, command)


def parse_providers(
    specs: Iterable[str],
    file_config: Mapping[str, Any] | None = None,
    resume_specs: Iterable[str] = (),
) -> dict[str, ProviderConfig]:
    """Parse every ``--provider``, ``--resume-args`` and the config file's ``[providers.NAME]``.

    A provider may be set up in either place; ``--provider`` gives (or
    overrides) its command, the file may also set its approval flags,
    ``pass_env`` and ``resume``; ``--resume-args`` overrides the latter.
    Naming one twice on the command line is a mistake worth stopping for.
    """
    commands: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, argv = parse_provider(spec)
        if name in commands:
            raise HostConfigError(f"--provider {name} is given twice")
        commands[name] = argv
    resumes: dict[str, tuple[str, ...] | None] = {}
    for spec in resume_specs:
        name, template = parse_resume_args(spec)
        if name in resumes:
            raise HostConfigError(f"--resume-args {name} is given twice")
        resumes[name] = template
    tables = dict((file_config or {}).get("providers") or {})
    providers: dict[str, ProviderConfig] = {}
    for name in sorted(set(commands) | set(tables)):
        config = _provider_config(name, commands.get(name), tables.get(name) or {})
        if name in resumes:
            config = replace(config, resume=resumes[name])
        providers[name] = config
    if not providers:
        raise HostConfigError("at least one --provider NAME=COMMAND is needed")
    unused = sorted(set(resumes) - set(providers))
    if unused:
        raise HostConfigError(
            f"--resume-args {', '.join(unused)}: no such provider on this host (give --provider)"
        )
    return providers


def parse_resume_args(spec: str) -> tuple[str, tuple[str, ...] | None]:
    """``NAME=ARGS`` (shlex-split, ``{session}`` in them) or ``NAME=`` (resume refused)."""
    name, sep, text = spec.partition("=")
    name = name.strip()
    if not sep or name not in KNOWN_PROVIDERS:
        raise HostConfigError(
            f"--resume-args {spec!r}: expected NAME=ARGS for one of {', '.join(KNOWN_PROVIDERS)}, "
            "e.g. claude='--resume {session}'"
        )
    if not text.strip():
        return name, None
    try:
        args = tuple(shlex.split(text))
    except ValueError as exc:
        raise HostConfigError(f"--resume-args {name}: cannot split the arguments: {exc}") from exc
    return name, _check_resume_template(f"--resume-args {name}", args)


def _check_resume_template(where: str, args: tuple[str, ...]) -> tuple[str, ...]:
    if not any(SESSION_PLACEHOLDER in arg for arg in args):
        raise HostConfigError(
            f"{where}: the arguments must hold {SESSION_PLACEHOLDER} where the session id goes"
        )
    return args


def _provider_config(
    name: str, command: tuple[str, ...] | None, table: Mapping[str, Any]
) -> ProviderConfig:
    where = f"[providers.{name}]"
    if name not in KNOWN_PROVIDERS:
        raise HostConfigError(f"{where}: unknown provider; use one of {', '.join(KNOWN_PROVIDERS)}")
    if not isinstance(table, Mapping):
        raise HostConfigError(f"{where}: expected a table")
    unknown = set(table) - {"command", "approval", "pass_env", "resume"}
    if unknown:
        raise HostConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if command is None:
        raw = table.get("command")
        if isinstance(raw, str):
            command = _split_command(name, raw)
        elif isinstance(raw, list) and raw and all(isinstance(a, str) for a in raw):
            command = tuple(raw)
        else:
            raise HostConfigError(f"{where}: command must be a string or a list of strings "
                                  f"(or give --provider {name}=COMMAND)")
    approval: dict[str, tuple[str, ...] | None] = dict(DEFAULT_APPROVAL_FLAGS[name])
    modes = table.get("approval") or {}
    if not isinstance(modes, Mapping):
        raise HostConfigError(f"{where}.approval: expected a table of mode = [flags] or false")
    for mode, flags in modes.items():
        if mode not in APPROVAL_MODES:
            raise HostConfigError(
                f"{where}.approval: unknown mode {mode!r}; use {', '.join(APPROVAL_MODES)}"
            )
        if flags is False:
            approval[mode] = None
        elif isinstance(flags, list) and all(isinstance(f, str) for f in flags):
            approval[mode] = tuple(flags)
        else:
            raise HostConfigError(f"{where}.approval.{mode}: expected a list of flags or false")
    pass_env = table.get("pass_env") or []
    if not isinstance(pass_env, list) or not all(
        isinstance(k, str) and _ENV_KEY.fullmatch(k) for k in pass_env
    ):
        raise HostConfigError(f"{where}.pass_env: expected a list of variable names")
    relay_keys = [k for k in pass_env if k.startswith("RELAY_")]
    if relay_keys:
        raise HostConfigError(
            f"{where}.pass_env: {', '.join(relay_keys)}: the daemon's RELAY_* settings "
            "never reach agents"
        )
    return ProviderConfig(
        argv=command, approval=approval, pass_env=tuple(pass_env),
        resume=_resume_from_table(where, table.get("resume", DEFAULT_RESUME_ARGS[name])),
    )


def _resume_from_table(where: str, raw: Any) -> tuple[str, ...] | None:
    """A table's ``resume``: a string (shlex-split), a list of strings, or false."""
    if raw is False:
        return None
    if isinstance(raw, str):
        try:
            raw = shlex.split(raw)
        except ValueError as exc:
            raise HostConfigError(f"{where}.resume: cannot split the arguments: {exc}") from exc
    if not isinstance(raw, list | tuple) or not raw or not all(isinstance(a, str) for a in raw):
        raise HostConfigError(
            f"{where}.resume: expected arguments with {SESSION_PLACEHOLDER} "
            "(a string or a list of strings) or false"
        )
    return _check_resume_template(f"{where}.resume", tuple(raw))


def read_config_file(path: Path | None) -> dict[str, Any]:
    """Read the host config (TOML); none means every provider uses the defaults."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise HostConfigError(f"--config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise HostConfigError(f"--config {path}: {exc}") from exc
    unknown = set(data) - {"providers"}
    if unknown:
        raise HostConfigError(f"--config {path}: unknown table(s) {', '.join(sorted(unknown))}")
    return data


DEFAULT_PATTERNS = tuple(re.compile(p) for p in DEFAULT_INPUT_PATTERNS)


def parse_input_patterns(specs: Iterable[str]) -> dict[str, tuple[re.Pattern[str], ...]]:
    """``--input-pattern PROVIDER=REGEX`` (repeatable): the provider's own patterns.

    Naming a provider at all replaces the defaults for it, so an operator can
    narrow them as well as widen them (give the defaults again to keep them).
    """
    found: dict[str, list[re.Pattern[str]]] = {}
    for spec in specs:
        name, sep, pattern = spec.partition("=")
        name = name.strip()
        if not sep or not name or not pattern:
            raise HostConfigError(
                f"--input-pattern {spec!r}: expected PROVIDER=REGEX, e.g. claude='Proceed\\?'"
            )
        if name not in KNOWN_PROVIDERS:
            raise HostConfigError(
                f"--input-pattern {name!r}: unknown provider; use one of {', '.join(KNOWN_PROVIDERS)}"
            )
        try:
            found.setdefault(name, []).append(re.compile(pattern))
        except re.error as exc:
            raise HostConfigError(f"--input-pattern {spec!r}: not a regular expression: {exc}") from exc
    return {name: tuple(patterns) for name, patterns in found.items()}


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
    """The few variables every agent gets from the daemon's environment (ADR 0017).

    An allow-list, not a deny-list: whatever else the daemon was started with
    (``RELAY_TOKEN`` above all, but also a login session's secrets) must not
    reach agents by inheritance. More comes only from the env file and a
    provider's ``pass_env``.
    """
    return {k: environ[k] for k in BASE_ENV_KEYS if k in environ}


def environment() -> dict[str, str]:
    """A copy of the daemon's environment: the host side's one read of it.

    ``relay host`` reads it once at start and passes the mapping down, as the
    server's ``relay.config.environment`` does (tests/ops/test_env_in_config.py).
    """
    return dict(os.environ)


def forget_token() -> None:
    """Drop ``RELAY_TOKEN`` from this process's environment once it has been read,
    so nothing the daemon starts (tmux, git, an agent) can inherit it."""
    os.environ.pop("RELAY_TOKEN", None)


def tmux_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of every tmux client the daemon runs.

    The first client starts the tmux server, which keeps that environment as
    its global one (``show-environment -g``) and hands it to every pane; so it
    must be as clean as the agents' own.
    """
    return {k: environ[k] for k in TMUX_ENV_KEYS if k in environ}


def provider_env(
    providers: Mapping[str, ProviderConfig], environ: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """Per provider, the ``pass_env`` variables the daemon has, read once at start."""
    return {
        name: {k: environ[k] for k in p.pass_env if k in environ}
        for name, p in providers.items()
    }


def read_token_file(path: Path) -> str:
    """The relay token from a file that only its owner can read.

    A token file readable by the group or others is as public as ``--token``
    on the command line, so it is refused, not just warned about.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise HostConfigError(f"--token-file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise HostConfigError(f"--token-file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise HostConfigError(
                f"--token-file {path} can be read by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        raw = fh.read(4097)
    token = raw.decode("utf-8", errors="strict").strip() if len(raw) <= 4096 else ""
    if not token or any(c.isspace() for c in token):
        raise HostConfigError(f"--token-file {path}: expected one token (no spaces, at most 4 KiB)")
    return token


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is a loopback name or address."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The relay's rule, shared rather than copied: its agent id ``orchestrator-<id>`` must fit too.
MAX_ORCHESTRATOR_ID = MAX_ORCHESTRATOR_ID_CHARS


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
    base_real = Path(os.path.realpath(base_dir))

    def children(path: Path) -> list[Path]:
        try:
            entries = [e for e in path.iterdir() if not e.name.startswith(".")]
        except OSError:
            return []
        return sorted(
            (e for e in entries if _is_dir(e) and _stays_inside(e, base_real)),
            key=lambda e: e.name,
        )

    for first in children(base_dir):
        found.append(first.name)
        if len(found) >= limit:
            return found, True
        for second in children(first):
            found.append(f"{first.name}/{second.name}")
            if len(found) >= limit:
                return found, True
    return found, False


def _stays_inside(path: Path, base_real: Path) -> bool:
    """A symlink out of the base dir is not a place an agent may work: don't list it."""
    real = Path(os.path.realpath(path))
    return real == base_real or real.is_relative_to(base_real)


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
