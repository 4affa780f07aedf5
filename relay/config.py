"""Settings: read once at the edge, then passed down explicitly.

Nothing deeper in the code reads ``os.environ``; ``Settings.from_env`` takes
the mapping it is given, so tests build settings without touching the process.
This module is the only one on the server side that reads the process
environment (``environment()``); tests/ops/test_env_in_config.py holds every
other module to that, so a default can never be repeated somewhere else.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from attrs import evolve, field, frozen

DEFAULT_MAX_BODY = 1024 * 1024
MIN_NOTIFY_SECRET = 16


class SettingsError(ValueError):
    """Raised when a setting is malformed or the combination is unsafe."""


@frozen
class Settings:
    """Everything ``relay serve`` can be told."""

    host: str = "127.0.0.1"
    port: int = 4850
    data_dir: Path = Path("./relay-data")
    store: str = "sqlite"
    postgres_dsn: str | None = None
    token: str | None = None
    stale_after: float = 90.0
    reap_every: float = 15.0
    max_body: int = DEFAULT_MAX_BODY
    keepalive: float = 15.0
    checkpoint_every: int = 10_000
    seal_every: int = 1_000  # events between tamper-evidence seals; 0: never (docs/audit.md)
    epoch_events: int = 1_000_000  # an epoch closes at this many events (0: no epochs; ADR 0020)
    epoch_seconds: float = 86_400.0  # ... or when its first event is this old, whichever first
    archive: bool = True  # move closed epochs to DATA/archive (false: keep them live; a test twin)
    keep_heartbeats: str = "30d"  # heartbeats older than this are thinned once archived (ADR 0025)
    keep_settled: str = "7d"  # settled commands/messages leave memory after this (history keeps them)
    test_phase: str | None = None  # tests only: pause the archiver at this phase (relay.store.archiver)
    sse_buffer: int = 1024 * 1024  # bytes queued for one event stream before it is cut
    sse_ring: int = 20_000  # recent positions kept encoded for resumes (older: replayed)
    replay_every: int = 10_000  # positions between the replayer's anchors (relay.audit.replay)
    max_streams_per_client: int = 32
    client_timeout: float = 30.0
    public_url: str | None = None  # the URL browsers use when it is not a loopback one (guard.py)
    metrics_public: bool = False  # /metrics without the token, for a scraper on a private network
    # Fleet lifecycle (issue 15, ADR 0019)
    command_deadline: float = 300.0  # seconds a command may stay pending or running
    lost_after: float = 300.0  # seconds an offline host's agents are "unknown" before "lost"
    max_reap_fraction: float = 0.5  # a pass reaping more than this share of the online ...
    max_reap_min: int = 10  # ... and more than this many suspends the reaper instead
    # Notifications (issue 16, ADR 0027): signed POSTs for what an operator must hear about.
    notify_urls: tuple[str, ...] = ()
    notify_secret: str | None = field(default=None, repr=False)  # never shown, never logged
    notify_retry_max: float = 60.0  # seconds: the longest wait between two attempts at one URL
    # Live terminal output (issue 16, ADR 0031): kept out of the log; bounded per agent and host.
    output_viewers: int = 8  # viewers of one agent's output at once (429 past it)
    output_host_viewers: int = 256  # viewers of one host's agents at once (429 past it)
    output_buffer: int = 256 * 1024  # bytes of an agent's recent output kept for new viewers
    output_push_max: int = 256 * 1024  # bytes in one output push from a host (413 past it)
    output_rate: int = 1024 * 1024  # bytes of output per second one host may push (429 past it)
    output_pushes: int = 100  # output pushes per second one host may make (429 past it)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from ``RELAY_*`` variables; unset ones keep their defaults."""
        s = cls()
        conv = {
            "RELAY_HOST": ("host", str),
            "RELAY_PORT": ("port", int),
            "RELAY_DATA": ("data_dir", Path),
            "RELAY_STORE": ("store", str),
            "RELAY_POSTGRES_DSN": ("postgres_dsn", str),
            "RELAY_TOKEN": ("token", str),
            "RELAY_STALE_AFTER": ("stale_after", float),
            "RELAY_REAP_EVERY": ("reap_every", float),
            "RELAY_MAX_BODY": ("max_body", int),
            "RELAY_KEEPALIVE": ("keepalive", float),
            "RELAY_CHECKPOINT_EVERY": ("checkpoint_every", int),
            "RELAY_SEAL_EVERY": ("seal_every", int),
            "RELAY_EPOCH_EVENTS": ("epoch_events", int),
            "RELAY_EPOCH_SECONDS": ("epoch_seconds", float),
            "RELAY_ARCHIVE": ("archive", boolean),
            "RELAY_KEEP_HEARTBEATS": ("keep_heartbeats", str),
            "RELAY_KEEP_SETTLED": ("keep_settled", str),
            "RELAY_TEST_PHASE": ("test_phase", str),
            "RELAY_SSE_BUFFER": ("sse_buffer", int),
            "RELAY_SSE_RING": ("sse_ring", int),
            "RELAY_REPLAY_EVERY": ("replay_every", int),
            "RELAY_MAX_STREAMS_PER_CLIENT": ("max_streams_per_client", int),
            "RELAY_CLIENT_TIMEOUT": ("client_timeout", float),
            "RELAY_PUBLIC_URL": ("public_url", str),
            "RELAY_METRICS_PUBLIC": ("metrics_public", _flag),
            "RELAY_COMMAND_DEADLINE": ("command_deadline", float),
            "RELAY_LOST_AFTER": ("lost_after", float),
            "RELAY_MAX_REAP_FRACTION": ("max_reap_fraction", float),
            "RELAY_MAX_REAP_MIN": ("max_reap_min", int),
            "RELAY_NOTIFY_URLS": ("notify_urls", _url_list),
            "RELAY_NOTIFY_SECRET": ("notify_secret", str),
            "RELAY_NOTIFY_RETRY_MAX": ("notify_retry_max", float),
            "RELAY_OUTPUT_VIEWERS": ("output_viewers", int),
            "RELAY_OUTPUT_HOST_VIEWERS": ("output_host_viewers", int),
            "RELAY_OUTPUT_BUFFER": ("output_buffer", int),
            "RELAY_OUTPUT_PUSH_MAX": ("output_push_max", int),
            "RELAY_OUTPUT_RATE": ("output_rate", int),
            "RELAY_OUTPUT_PUSHES": ("output_pushes", int),
        }
        changes: dict[str, object] = {}
        for key, (name, kind) in conv.items():
            raw = env.get(key)
            if raw is None or raw == "":
                continue
            try:
                changes[name] = kind(raw)
            except ValueError:
                what = "boolean (1/0, true/false)" if kind is _flag else kind.__name__
                raise SettingsError(f"{key}={raw!r} is not a valid {what}") from None
        return evolve(s, **changes).checked()

    def checked(self) -> Settings:
        """Refuse combinations that are malformed or unsafe."""
        if self.store not in ("sqlite", "postgres"):
            raise SettingsError(f"--store must be sqlite or postgres, not {self.store!r}")
        if self.store == "postgres" and not self.postgres_dsn:
            raise SettingsError("--store postgres needs --postgres-dsn (or RELAY_POSTGRES_DSN)")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"--port must be 0-65535, not {self.port}")
        if self.stale_after <= 0 or self.reap_every <= 0:
            raise SettingsError("--stale-after and --reap-every must be positive")
        if self.max_streams_per_client < 0:
            raise SettingsError("--max-streams-per-client must be 0 (no limit) or more")
        if self.client_timeout <= 0:
            raise SettingsError("--client-timeout must be positive")
        if self.seal_every < 0:
            raise SettingsError("--seal-every must be 0 (never) or more")
        if self.epoch_events < 0:
            raise SettingsError("--epoch-events must be 0 (no epochs) or more")
        if not self.epoch_seconds > 0:
            raise SettingsError("--epoch-seconds must be positive")
        durations = (("--keep-heartbeats", self.keep_heartbeats), ("--keep-settled", self.keep_settled))
        for flag, value in durations:
            try:
                parse_duration_ms(value)
            except ValueError as e:
                raise SettingsError(f"{flag}: {e}") from None
        if self.sse_buffer < 4096:
            raise SettingsError("--sse-buffer must be at least 4096 bytes")
        if self.sse_ring < 1:
            raise SettingsError("RELAY_SSE_RING must be at least 1")
        if self.replay_every < 1:
            raise SettingsError("RELAY_REPLAY_EVERY must be at least 1")
        if self.command_deadline <= 0 or self.lost_after < 0:
            raise SettingsError("--command-deadline must be positive and --lost-after 0 or more")
        if not 0 < self.max_reap_fraction <= 1 or self.max_reap_min < 0:
            raise SettingsError("--max-reap-fraction must be in (0, 1] and --max-reap-min 0 or more")
        self._check_notify()
        self._check_output()
        if self.max_body < 1024:
            raise SettingsError("the body limit must be at least 1024 bytes")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise SettingsError(
                    f"--public-url must be http(s)://HOST[:PORT], not {self.public_url!r}"
                )
        if not self.token and not is_loopback(self.host):
            raise SettingsError(
                f"refusing to listen on {self.host} without a token: "
                "set --token (or RELAY_TOKEN), or use a loopback --host"
            )
        return self

    def _check_notify(self) -> None:
        for url in self.notify_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Not echoed whole: a webhook URL often carries its own secret.
                raise SettingsError(
                    f"--notify-url must be an http(s) URL with a host ({parts.scheme!r} given)"
                )
        if self.notify_urls and len(self.notify_secret or "") < MIN_NOTIFY_SECRET:
            raise SettingsError(
                f"--notify-url needs --notify-secret (or RELAY_NOTIFY_SECRET) of at least "
                f"{MIN_NOTIFY_SECRET} characters: receivers verify every notice with it"
            )
        if not self.notify_retry_max > 0:
            raise SettingsError("RELAY_NOTIFY_RETRY_MAX must be positive")

    def _check_output(self) -> None:
        if self.output_viewers < 1 or self.output_host_viewers < 1 or self.output_pushes < 1:
            raise SettingsError(
                "--output-viewers, --output-host-viewers and --output-pushes must be at least 1"
            )
        if self.output_buffer < 4096 or self.output_push_max < 4096:
            raise SettingsError("--output-buffer and --output-push-max must be at least 4096 bytes")

    @property
    def output_push_limit(self) -> int:
        """The largest output push accepted: --output-push-max, within --max-body and a
        second's worth of --output-rate (a larger one could never pass the rate)."""
        return min(self.output_push_max, self.max_body, self.output_rate)

    @property
    def stale_after_ms(self) -> int:
        return int(self.stale_after * 1000)

    @property
    def heartbeat_interval_ms(self) -> int:
        """What hosts are told to heartbeat at: three beats per stale-after."""
        return max(1, self.stale_after_ms // 3)

    @property
    def keep_heartbeats_ms(self) -> int | None:
        """How long archived heartbeats stay whole (None: forever)."""
        return parse_duration_ms(self.keep_heartbeats)

    @property
    def keep_settled_ms(self) -> int | None:
        """How long settled commands and messages stay in memory (None: forever)."""
        return parse_duration_ms(self.keep_settled)


def environment() -> dict[str, str]:
    """A copy of the process environment: the one read of it that the relay makes.

    Entry points (``relay serve``, ``relay audit``, ``relay token``) call this
    once and pass the mapping down, so nothing below them depends on the process.
    """
    return dict(os.environ)


@frozen
class LogLocation:
    """Where a log is, for the tools that only read it (``relay audit``)."""

    store: str
    data_dir: Path
    postgres_dsn: str | None


def log_location(
    env: Mapping[str, str],
    *,
    store: str | None = None,
    data_dir: Path | str | None = None,
    postgres_dsn: str | None = None,
) -> LogLocation:
    """Flags over ``RELAY_STORE`` / ``RELAY_DATA`` / ``RELAY_POSTGRES_DSN`` over ``Settings``' defaults.

    Not ``Settings.from_env``: a reader of the log must not be refused for a
    setting only a server needs (a ``RELAY_HOST`` without a token, say).
    """
    default = Settings()
    return LogLocation(
        store=str(store or env.get("RELAY_STORE") or default.store),
        data_dir=Path(data_dir or env.get("RELAY_DATA") or default.data_dir),
        postgres_dsn=postgres_dsn or env.get("RELAY_POSTGRES_DSN") or default.postgres_dsn,
    )


def state_home(env: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME``, or ``~/.local/state`` when it is unset (XDG base directories)."""
    return Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")


def boolean(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int | None:
    """``30d``, ``12h``, ``90s``, ``0`` (at once) or ``forever`` (None); raises ValueError."""
    raw = text.strip().lower()
    if raw == "forever":
        return None
    if raw == "0":
        return 0
    for unit in ("ms", "s", "m", "h", "d", "w"):
        if raw.endswith(unit) and raw[: -len(unit)].isdigit():
            if unit == "s" and raw.endswith("ms"):
                continue
            return int(raw[: -len(unit)]) * _UNITS_MS[unit]
    raise ValueError(
        f"{text!r} is not a duration: a number with a unit (ms, s, m, h, d, w), 0, or forever"
    )


def _url_list(raw: str) -> tuple[str, ...]:
    """RELAY_NOTIFY_URLS: comma-separated."""
    return tuple(u.strip() for u in raw.split(",") if u.strip())


def _flag(raw: str) -> bool:
    """A boolean variable: 1/true/yes/on or 0/false/no/off."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only hosts open without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
