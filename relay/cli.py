"""``relay``: command-line entry point.

Arguments become a frozen ``Settings`` (flags over ``RELAY_*`` variables over
defaults), then the chosen subcommand runs with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from attrs import evolve

from relay import __version__
from relay.config import Settings, SettingsError, environment

_METAVARS = {
    "data": "DIR",
    "postgres_dsn": "DSN",
    "stale_after": "SECONDS",
    "reap_every": "SECONDS",
    "keepalive": "SECONDS",
    "client_timeout": "SECONDS",
    "max_body": "BYTES",
    "sse_buffer": "BYTES",
    "checkpoint_every": "EVENTS",
    "seal_every": "EVENTS",
    "epoch_events": "EVENTS",
    "epoch_seconds": "SECONDS",
    "keep_heartbeats": "DURATION",
    "keep_settled": "DURATION",
    "max_streams_per_client": "N",
    "log_level": "LEVEL",
    "public_url": "URL",
}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="An event-sourced relay for fleets of AI coding agents. "
        "Every registration, heartbeat, command and reap is an event in an append-only log.",
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the relay server",
        description="Run the relay: HTTP API, read models and reaper over one event log. "
        "Each option can also be set with the environment variable shown.",
    )
    d = Settings()
    serve.add_argument("--host", default=None, help=f"address to listen on [RELAY_HOST] ({d.host})")
    serve.add_argument(
        "--port", type=int, default=None, help=f"port; 0 picks a free one [RELAY_PORT] ({d.port})"
    )
    serve.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"data folder for the embedded SQLite log and checkpoints, created if missing "
        f"[RELAY_DATA] ({d.data_dir})",
    )
    serve.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default=None,
        help=f"where the log lives [RELAY_STORE] ({d.store})",
    )
    serve.add_argument(
        "--postgres-dsn", default=None, help="PostgreSQL DSN for --store postgres [RELAY_POSTGRES_DSN]"
    )
    serve.add_argument(
        "--token",
        default=None,
        help="admin token required on /api/* (except health); without one only a "
        "loopback --host is allowed [RELAY_TOKEN]",
    )
    serve.add_argument(
        "--stale-after",
        type=float,
        default=None,
        help=f"seconds of silence before an agent or orchestrator is marked offline "
        f"[RELAY_STALE_AFTER] ({d.stale_after:g})",
    )
    serve.add_argument(
        "--reap-every",
        type=float,
        default=None,
        help=f"seconds between reaper runs [RELAY_REAP_EVERY] ({d.reap_every:g})",
    )
    serve.add_argument(
        "--max-body",
        type=int,
        default=None,
        help=f"request body limit in bytes [RELAY_MAX_BODY] ({d.max_body})",
    )
    serve.add_argument(
        "--keepalive",
        type=float,
        default=None,
        help=f"seconds between SSE keep-alive comments [RELAY_KEEPALIVE] ({d.keepalive:g})",
    )
    serve.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help=f"events between read-model checkpoints [RELAY_CHECKPOINT_EVERY] "
        f"({d.checkpoint_every})",
    )
    serve.add_argument(
        "--max-streams-per-client",
        type=int,
        default=None,
        help=f"open event streams allowed per client address, 0 for no limit "
        f"[RELAY_MAX_STREAMS_PER_CLIENT] ({d.max_streams_per_client})",
    )
    serve.add_argument(
        "--client-timeout",
        type=float,
        default=None,
        help=f"seconds a client gets to send a request's headers, and again its body; "
        f"idle connections close after it [RELAY_CLIENT_TIMEOUT] ({d.client_timeout:g})",
    )
    serve.add_argument(
        "--seal-every",
        type=int,
        default=None,
        help=f"events between tamper-evidence seals in the log, 0 for none "
        f"[RELAY_SEAL_EVERY] ({d.seal_every})",
    )
    serve.add_argument(
        "--epoch-events",
        type=int,
        default=None,
        help=f"events after which an epoch of the log closes and is sealed by its Merkle root, "
        f"0 for no epochs [RELAY_EPOCH_EVENTS] ({d.epoch_events})",
    )
    serve.add_argument(
        "--epoch-seconds",
        type=float,
        default=None,
        help=f"seconds after which an epoch closes if it has not filled up first "
        f"[RELAY_EPOCH_SECONDS] ({d.epoch_seconds:g})",
    )
    serve.add_argument(
        "--keep-heartbeats",
        default=None,
        help=f"how long archived heartbeats stay whole before they are thinned to presence "
        f"intervals: a duration (30d, 12h, 90m), 0 (as soon as archived) or forever "
        f"[RELAY_KEEP_HEARTBEATS] ({d.keep_heartbeats})",
    )
    serve.add_argument(
        "--keep-settled",
        default=None,
        help=f"how long settled commands and messages stay in memory (they stay in the log) "
        f"[RELAY_KEEP_SETTLED] ({d.keep_settled})",
    )
    serve.add_argument(
        "--sse-buffer",
        type=int,
        default=None,
        help=f"bytes an event stream may fall behind before the relay ends it (the client "
        f"resumes with Last-Event-ID) [RELAY_SSE_BUFFER] ({d.sse_buffer})",
    )
    serve.add_argument(
        "--public-url",
        default=None,
        help="the URL people and hosts use to reach this relay when it is not a loopback one "
        "(behind a proxy, or a DNS name); without --token the relay answers only loopback "
        "Host names and this one [RELAY_PUBLIC_URL]",
    )
    serve.add_argument(
        "--metrics-public",
        action="store_true",
        default=None,
        help="serve /metrics without the token, for a Prometheus scraper on a private network "
        "(by default /metrics needs the admin token when --token is set) [RELAY_METRICS_PUBLIC=1]",
    )
    serve.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        help=f"least severe log lines written: {', '.join(LOG_LEVELS)} [RELAY_LOG_LEVEL] (INFO)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text, or one JSON object a line for log shippers [RELAY_LOG_FORMAT] (text)",
    )
    _add_lifecycle_flags(serve, d)
    _add_notify_flags(serve)
    _add_output_flags(serve, d)
    for action in serve._actions:  # units in the usage line, not DEST_IN_CAPITALS
        action.metavar = _METAVARS.get(action.dest, action.metavar)
    serve.set_defaults(func=run_serve)
    _add_optional_subcommands(sub)
    return parser


def _add_lifecycle_flags(serve: argparse.ArgumentParser, d: Settings) -> None:
    """Fleet lifecycle: command deadlines, lost agents and the reaper's brake (issue 15)."""
    serve.add_argument(
        "--command-deadline", type=float, default=None, metavar="SECONDS",
        help=f"seconds a command may stay pending or running before it expires "
        f"[RELAY_COMMAND_DEADLINE] ({d.command_deadline:g})",
    )
    serve.add_argument(
        "--lost-after", type=float, default=None, metavar="SECONDS",
        help=f"seconds an offline host's agents are 'unknown' before they are 'lost' "
        f"[RELAY_LOST_AFTER] ({d.lost_after:g})",
    )
    serve.add_argument(
        "--max-reap-fraction", type=float, default=None, metavar="FRACTION",
        help=f"a reap pass that would mark offline more than this share of the online "
        f"entities (and more than --max-reap-min) suspends the reaper "
        f"[RELAY_MAX_REAP_FRACTION] ({d.max_reap_fraction:g})",
    )
    serve.add_argument(
        "--max-reap-min", type=int, default=None, metavar="N",
        help=f"see --max-reap-fraction [RELAY_MAX_REAP_MIN] ({d.max_reap_min})",
    )


def _add_notify_flags(serve: argparse.ArgumentParser) -> None:
    """Notifications that are never lost (issue 16, ADR 0027)."""
    serve.add_argument(
        "--notify-url", action="append", default=None, metavar="URL", dest="notify_urls",
        help="POST a signed JSON notice here when a host goes offline, a command fails or "
        "expires, or an agent crash-loops or waits for input; repeatable "
        "[RELAY_NOTIFY_URLS, comma-separated]",
    )
    serve.add_argument(
        "--notify-secret", default=None, metavar="SECRET",
        help="HMAC-SHA256 key for X-Relay-Signature (at least 16 characters; never logged) "
        "[RELAY_NOTIFY_SECRET]",
    )


def _add_output_flags(serve: argparse.ArgumentParser, d: Settings) -> None:
    """Live terminal output: limits per agent and per host (issue 16, ADR 0031)."""
    serve.add_argument(
        "--output-viewers", type=int, default=None, metavar="N",
        help=f"viewers of one agent's live output at once (429 past it) "
        f"[RELAY_OUTPUT_VIEWERS] ({d.output_viewers})",
    )
    serve.add_argument(
        "--output-host-viewers", type=int, default=None, metavar="N",
        help=f"viewers of one host's agents at once (429 past it) "
        f"[RELAY_OUTPUT_HOST_VIEWERS] ({d.output_host_viewers})",
    )
    serve.add_argument(
        "--output-buffer", type=int, default=None, metavar="BYTES",
        help=f"recent output kept per watched agent for viewers who join; a viewer that "
        f"falls this far behind (plus one push) is cut [RELAY_OUTPUT_BUFFER] ({d.output_buffer})",
    )
    serve.add_argument(
        "--output-push-max", type=int, default=None, metavar="BYTES",
        help=f"the largest output push a host may send (413 past it) "
        f"[RELAY_OUTPUT_PUSH_MAX] ({d.output_push_max})",
    )
    serve.add_argument(
        "--output-rate", type=int, default=None, metavar="BYTES",
        help=f"output bytes per second one host may push (429 past it) "
        f"[RELAY_OUTPUT_RATE] ({d.output_rate})",
    )
    serve.add_argument(
        "--output-pushes", type=int, default=None, metavar="N",
        help=f"output pushes per second one host may make (429 past it) "
        f"[RELAY_OUTPUT_PUSHES] ({d.output_pushes})",
    )


_OUTPUT_FLAGS = (
    "output_viewers", "output_host_viewers", "output_buffer", "output_push_max", "output_rate",
    "output_pushes",
)
_LIFECYCLE_FLAGS = ("command_deadline", "lost_after", "max_reap_fraction", "max_reap_min")


def _add_optional_subcommands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Subcommands that live in their own packages register themselves here."""
    from relay.tokencli import add_token_parsers

    add_token_parsers(sub)  # relay enroll, relay token rotate|revoke (ADR 0013)
    try:
        from relay.host.cli import add_host_parser
    except ImportError:
        pass
    else:
        add_host_parser(sub)
    try:
        from relay.audit import add_audit_parser
    except ImportError:
        pass
    else:
        add_audit_parser(sub)
    # Always listed: it imports the PostgreSQL driver only when it runs, and then
    # says which extra to install if it is missing.
    from relay.migrate import add_migrate_parser

    add_migrate_parser(sub)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Flags over environment over defaults."""
    s = Settings.from_env(env)
    flags = {
        "host": args.host,
        "port": args.port,
        "data_dir": args.data,
        "store": args.store,
        "postgres_dsn": args.postgres_dsn,
        "token": args.token,
        "stale_after": args.stale_after,
        "reap_every": args.reap_every,
        "max_body": args.max_body,
        "keepalive": args.keepalive,
        "checkpoint_every": args.checkpoint_every,
        "seal_every": args.seal_every,
        "epoch_events": args.epoch_events,
        "epoch_seconds": args.epoch_seconds,
        "keep_heartbeats": args.keep_heartbeats,
        "keep_settled": args.keep_settled,
        "sse_buffer": args.sse_buffer,
        "max_streams_per_client": args.max_streams_per_client,
        "client_timeout": args.client_timeout,
        "public_url": args.public_url,
        "metrics_public": args.metrics_public,
    }
    flags.update({k: getattr(args, k, None) for k in _LIFECYCLE_FLAGS})
    flags.update({k: getattr(args, k, None) for k in _OUTPUT_FLAGS})
    urls = getattr(args, "notify_urls", None)
    flags["notify_urls"] = tuple(urls) if urls else None
    flags["notify_secret"] = getattr(args, "notify_secret", None)
    return evolve(s, **{k: v for k, v in flags.items() if v is not None}).checked()


def run_serve(args: argparse.Namespace) -> int:
    from relay import jsonlog

    env = environment()
    log_format = args.log_format or env.get("RELAY_LOG_FORMAT") or "text"
    if log_format not in ("text", "json"):
        print(f"relay: RELAY_LOG_FORMAT must be text or json, not {log_format!r}", file=sys.stderr)
        return 2
    log_level = (args.log_level or env.get("RELAY_LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        print(
            f"relay: RELAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}",
            file=sys.stderr,
        )
        return 2
    jsonlog.configure(log_level, log_format)
    # Everything the relay writes (the SQLite log and its -wal/-shm, checkpoints, anchors) is
    # this user's alone: the log holds every label, prompt and message.
    os.umask(0o077)
    try:
        settings = settings_from(args, env)
    except SettingsError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    from eventsourcing.persistence import PersistenceError

    from relay.store import PostgresDriverMissingError, require_postgres_driver
    from relay.store.lock import DataFolderInUseError

    if settings.store == "postgres":
        try:
            require_postgres_driver()  # before anything is opened or bound
        except PostgresDriverMissingError as e:
            print(f"relay: {e}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_serve(settings))
    except DataFolderInUseError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    except PersistenceError as e:
        print(f"relay: cannot open the event store: {_store_problem(settings) or e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"relay: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr)
        return 1
    return 0


def _store_problem(settings: Settings) -> str | None:
    """Why PostgreSQL is unreachable, in libpq's words (the pool only says it timed out)."""
    if settings.store != "postgres" or not settings.postgres_dsn:
        return None
    from relay.store.postgres import probe

    return probe(settings.postgres_dsn)


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from relay.http.app import create_app, make_runner

    app = create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()  # starts the service: read models loaded, writer running
    from relay.http.app import tune_gc

    tune_gc()
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=5.0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    # One write, newline included: print() writes the text and its end separately, and
    # with stdout and stderr on one pipe (a service manager, a test) a log line from
    # another thread could land between them and break the line that names the URL.
    sys.stdout.write(f"relay listening on http://{host}:{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("relay stopping", flush=True)
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:2] == ["host", "notify"]:
        # A provider's hook runs this inside an agent, often: skip building every
        # subcommand's parser (relay audit alone imports for half a second).
        from relay.host.cli import main as host_main

        return host_main(given[1:])
    parser = build_parser()
    args = parser.parse_args(given)
    from relay.store import PostgresDriverMissingError

    try:
        return int(args.func(args) or 0)
    except PostgresDriverMissingError as e:  # e.g. relay audit --store postgres
        print(f"relay: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
