"""``relay host``: arguments to a ``HostConfig``, then run the daemon.

``relay/cli.py`` wires the subcommand with ``add_host_parser`` and calls
``run_host``; ``python -m relay.host`` runs the same thing on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from relay.host.config import (
    MAX_ORCHESTRATOR_ID,
    HostConfig,
    HostConfigError,
    agent_base_env,
    check_id,
    default_state_path,
    environment,
    forget_token,
    is_loopback_url,
    parse_input_patterns,
    parse_providers,
    provider_env,
    read_config_file,
    read_env_file,
    read_token_file,
    tmux_env,
)
from relay.host.lifecycle import add_lifecycle_arguments, lifecycle_from_args
from relay.host.output import add_output_arguments, output_from_args
from relay.host.state import StateFileError
from relay.host.tmux import Tmux

log = logging.getLogger("relay.host")


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(environ[name])
    except (KeyError, ValueError):
        return default


def add_host_parser(subparsers: Any) -> None:
    """Add the ``host`` subcommand to ``relay``'s subparsers."""
    parser = subparsers.add_parser(
        "host",
        help="run the host daemon that starts agents on this machine",
        description="Register this machine with a relay and carry out its spawn, "
        "restart and shutdown commands by running agents in tmux sessions.",
    )
    configure_parser(parser)
    parser.set_defaults(func=run_host)


def configure_parser(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Add the host daemon's options to ``parser`` (defaults from the environment)."""
    env = environment() if environ is None else environ
    parser.add_argument("--relay", default=env.get("RELAY_URL"), metavar="URL",
                        help="the relay's base URL, e.g. http://relay:4850 (env RELAY_URL)")
    parser.add_argument("--id", dest="orchestrator_id", default=env.get("RELAY_HOST_ID"),
                        help="this host's orchestrator id (env RELAY_HOST_ID)")
    parser.add_argument("--base-dir", default=env.get("RELAY_BASE_DIR"), metavar="DIR",
                        help="agents may only work inside this folder (env RELAY_BASE_DIR)")
    parser.add_argument("--provider", action="append", default=[], metavar="NAME=COMMAND",
                        help="the command that starts a provider here, e.g. "
                        "claude='claude --model opus'; repeat for each provider")
    parser.add_argument("--resume-args", action="append", default=[], metavar="NAME=ARGS",
                        help="how a provider resumes a session, {session} standing for its id, "
                        "e.g. claude='--resume {session}' (the default; codex: 'resume "
                        "{session}'); NAME= refuses resumes; repeat for each provider")
    parser.add_argument("--hostname", default=None,
                        help="the name shown in the dashboard (default: this machine's name)")
    parser.add_argument("--env-file", default=env.get("RELAY_ENV_FILE"), metavar="FILE",
                        help="KEY=VALUE lines given to agents; only the names are sent "
                        "to the relay (env RELAY_ENV_FILE)")
    parser.add_argument("--token-file", default=env.get("RELAY_TOKEN_FILE"), metavar="PATH",
                        help="a file (mode 0600) holding this host's relay token; or set "
                        "RELAY_TOKEN in the environment. Never give a token on the command line")
    # Kept only to refuse it with a useful message: argv is public (/proc/PID/cmdline).
    parser.add_argument("--token", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=env.get("RELAY_HOST_CONFIG"), metavar="FILE",
                        help="TOML file with [providers.NAME] tables: command, approval "
                        "flags per mode, pass_env (env RELAY_HOST_CONFIG)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a plain http:// relay URL that is not loopback "
                        "(the token then crosses the network in clear text)")
    parser.add_argument("--start-grace", type=float, default=2.0, metavar="SECONDS",
                        help="a provider that exits within this time after its start makes "
                        "its spawn fail with its exit status and last lines (default 2)")
    parser.add_argument("--state", default=env.get("RELAY_HOST_STATE"), metavar="FILE",
                        help="the state file (default ~/.local/state/relay/host-<id>.json)")
    parser.add_argument("--tmux-socket", default=env.get("RELAY_TMUX_SOCKET", "relay"),
                        metavar="NAME",
                        help="tmux socket name (tmux -L NAME) for the agents' sessions; "
                        "'' means tmux's default socket (env RELAY_TMUX_SOCKET, default relay)")
    parser.add_argument("--stale-after", type=float,
                        default=_env_float(env, "RELAY_STALE_AFTER", 90.0), metavar="SECONDS",
                        help="the relay's stale-after; heartbeats go every third of it "
                        "(default 90, so every 30 s)")
    parser.add_argument("--check-every", type=float, default=5.0, metavar="SECONDS",
                        help="how often to look for agents whose tmux session ended (default 5)")
    parser.add_argument("--max-backoff", type=float, default=30.0, metavar="SECONDS",
                        help="the longest wait between retries when the relay is away "
                        "(default 30)")
    parser.add_argument("--idle-after", type=float,
                        default=_env_float(env, "RELAY_IDLE_AFTER", 30.0), metavar="SECONDS",
                        help="an agent whose pane printed nothing this long waits for a person: "
                        "'input' when its last lines match an --input-pattern, else 'idle'; "
                        "0 turns this rule off (provider hooks still work; default 30, env "
                        "RELAY_IDLE_AFTER)")
    parser.add_argument("--input-pattern", action="append", default=[], metavar="PROVIDER=REGEX",
                        help="a regular expression that, found in a quiet agent's last lines, "
                        "means it asks a question; repeat it. Naming a provider replaces the "
                        "defaults for it (\\[[yY]/[nN]\\], \\([yY]/[nN]\\), Proceed\\?, "
                        "Do you want, Continue\\?)")
    add_lifecycle_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--once", "--dry-run", dest="once", action="store_true",
                        help="print what would be registered and exit without contacting "
                        "the relay")
    parser.add_argument("--log-level", default=env.get("RELAY_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="host_command", metavar="{notify}")
    notify = sub.add_parser(
        "notify",
        help="(run by a provider's hook inside an agent) tell the host daemon the agent "
        "waits for a person",
        description="Read a provider hook's JSON on stdin (Claude Code: Notification, Stop, "
        "UserPromptSubmit, SessionStart...) and drop a notice for the host daemon that started "
        "this agent (RELAY_NOTIFY_DIR, RELAY_AGENT_ID, RELAY_TMUX_SESSION from the agent's "
        "environment). Needs no token; always exits 0 so a hook never gets in the agent's way.",
    )
    notify.add_argument("--attention", choices=("input", "idle", "none"), default=None,
                        help="say it outright instead of reading a hook's JSON "
                        "(for providers whose hooks we cannot read)")
    notify.add_argument("--reason", default=None, help="why, as the dashboard shows it")


TOKEN_ON_ARGV = (
    "--token is refused: a command line can be read by every local user "
    "(/proc/PID/cmdline, ps). Put the token in a file only you can read and give "
    "--token-file PATH (chmod 600), or set RELAY_TOKEN in the daemon's environment"
)


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The relay token from ``--token-file`` or ``RELAY_TOKEN``; never from argv."""
    if args.token is not None:
        raise HostConfigError(TOKEN_ON_ARGV)
    if args.token_file:
        return read_token_file(Path(os.path.expanduser(args.token_file)))
    return env.get("RELAY_TOKEN") or None


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> HostConfig:
    """Validate the parsed arguments into a ``HostConfig`` (raises ``HostConfigError``)."""
    env = environment() if environ is None else environ
    token = _token(args, env)
    if not args.relay:
        raise HostConfigError("--relay URL is needed (or RELAY_URL)")
    if not args.relay.startswith(("http://", "https://")):
        raise HostConfigError(f"--relay {args.relay!r}: expected an http:// or https:// URL")
    if args.relay.startswith("http://") and not is_loopback_url(args.relay):
        if not args.insecure:
            raise HostConfigError(
                f"--relay {args.relay!r} is plain http:// to another machine: the token "
                "and every command would cross the network in clear text. Use https://, "
                "or add --insecure if this network is private"
            )
        log.warning(
            "INSECURE: --relay %s is plain http:// to another machine; the token and "
            "every command cross the network in clear text (--insecure given)", args.relay,
        )
    if not args.orchestrator_id:
        raise HostConfigError("--id is needed (or RELAY_HOST_ID)")
    orchestrator_id = check_id(args.orchestrator_id, "--id", MAX_ORCHESTRATOR_ID)
    if not args.base_dir:
        raise HostConfigError("--base-dir DIR is needed (or RELAY_BASE_DIR)")
    base_dir = Path(os.path.abspath(os.path.expanduser(args.base_dir)))
    if not base_dir.is_dir():
        raise HostConfigError(f"--base-dir {str(base_dir)!r} is not an existing directory")
    file_config = read_config_file(
        Path(os.path.expanduser(args.config)) if args.config else None
    )
    providers = parse_providers(args.provider, file_config, args.resume_args)
    env_file = Path(os.path.expanduser(args.env_file)) if args.env_file else None
    agent_env = read_env_file(env_file)
    if token and token in agent_env.values():
        leaked = sorted(k for k, v in agent_env.items() if v == token)
        raise HostConfigError(
            f"--env-file gives agents this host's own relay token ({', '.join(leaked)}); "
            "agents must never hold it"
        )
    state = (
        Path(os.path.expanduser(args.state))
        if args.state
        else default_state_path(orchestrator_id, env)
    )
    if args.stale_after <= 0:
        raise HostConfigError("--stale-after must be positive")
    return HostConfig(
        relay_url=args.relay.rstrip("/"),
        orchestrator_id=orchestrator_id,
        hostname=args.hostname or socket.gethostname(),
        base_dir=base_dir,
        providers=providers,
        state_path=state,
        env=agent_env,
        agent_base_env=agent_base_env(env),
        provider_env=provider_env(providers, env),
        admin_token=token,
        tmux_socket=args.tmux_socket or None,
        stale_after=args.stale_after,
        check_every=max(args.check_every, 0.1),
        max_backoff=max(args.max_backoff, 0.1),
        start_grace=max(args.start_grace, 0.0),
        idle_after=max(args.idle_after, 0.0),
        input_patterns=parse_input_patterns(args.input_pattern),
    )


def _setup_logging(level: str) -> None:
    from relay import jsonlog  # labels and paths in log lines come from the relay: escape them

    jsonlog.configure(level, "text")


def run_notify(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """``relay host notify``: one hook call into one notice for the daemon (ADR 0032).

    Runs inside an agent, as its provider's hook: it holds no token and never
    talks to the relay, and it exits 0 whatever happens (a failing hook would
    only bother the agent), saying on stderr what went wrong.
    """
    from relay.host.notice import KEEP, hook_notice, write_notice

    env = environment() if environ is None else environ
    directory, agent_id = env.get("RELAY_NOTIFY_DIR"), env.get("RELAY_AGENT_ID")
    if not directory or not agent_id:
        print("relay host notify: not inside an agent of relay host (RELAY_NOTIFY_DIR or "
              "RELAY_AGENT_ID unset); nothing to do", file=sys.stderr)
        return 0
    hook: dict[str, Any] = {}
    if not sys.stdin.isatty():
        raw = sys.stdin.buffer.read(64 * 1024)
        with contextlib.suppress(ValueError):
            parsed = json.loads(raw or b"{}")
            hook = parsed if isinstance(parsed, dict) else {}
    notice = hook_notice(hook, args.attention, args.reason)
    if notice["attention"] == KEEP and not notice["sessionId"]:
        return 0  # a hook that tells nothing we keep
    try:
        write_notice(Path(directory), agent_id, env.get("RELAY_TMUX_SESSION"), notice)
    except OSError as exc:
        print(f"relay host notify: cannot write to {directory}: {exc}", file=sys.stderr)
    return 0


def run_host(args: argparse.Namespace) -> int:
    """Run ``relay host`` with parsed arguments; returns the exit code."""
    if getattr(args, "host_command", None) == "notify":
        return run_notify(args)
    # Here, not at the top: ``relay host notify`` (a hook, run often) must not import aiohttp.
    from relay.host.daemon import HostDaemon, registration_payload

    _setup_logging(args.log_level)
    try:
        config = build_config(args)
        lifecycle = lifecycle_from_args(args)
    except HostConfigError as exc:
        print(f"relay host: {exc}", file=sys.stderr)
        return 2
    # Read once; from now on nothing this process starts can inherit it.
    forget_token()
    if args.once:
        print(json.dumps({
            "relay": config.relay_url,
            "register": registration_payload(config, lifecycle),
            "providers": {
                name: {
                    "argv": list(p.argv),
                    "approval": {m: None if f is None else list(f) for m, f in p.approval.items()},
                    "passEnv": list(p.pass_env),
                    "resume": None if p.resume is None else list(p.resume),
                }
                for name, p in config.providers.items()
            },
            "state": str(config.state_path),
            "tmuxSocket": config.tmux_socket,
            "heartbeatEvery": config.heartbeat_every,
        }, indent=2))
        return 0
    tmux = Tmux(config.tmux_socket, env=tmux_env(environment()))
    if not tmux.available():
        print("relay host: tmux is not installed (apt-get install tmux)", file=sys.stderr)
        return 2
    daemon = HostDaemon(config, tmux, lifecycle, output_from_args(args))
    try:
        asyncio.run(_main(daemon))
    except (HostConfigError, StateFileError) as exc:
        print(f"relay host: {exc}", file=sys.stderr)
        return 2
    return 0


async def _main(daemon: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, daemon.stop)
    await daemon.run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m relay.host``: the same as ``relay host``."""
    parser = argparse.ArgumentParser(prog="relay host")
    configure_parser(parser)
    return run_host(parser.parse_args(argv))
