"""``relay enroll`` and ``relay token rotate|revoke``: an admin's token chores, over HTTP.

They talk to a running relay (``--relay URL`` or ``RELAY_URL``), like any
client, so every grant is an event in its log (ADR 0013). The admin token is
read from ``--token-file`` or ``RELAY_TOKEN`` and never taken on the command
line: argv is visible to every local user in ``/proc/<pid>/cmdline``. The
orchestrator token that comes back is printed alone on stdout (for
``$(...)``), or written to ``--out`` created 0600, and nowhere else.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from relay.config import environment
from relay.domain.rules import PROVIDERS

DEFAULT_URL = "http://127.0.0.1:4850"
TIMEOUT_S = 30.0


class TokenCliError(Exception):
    """Raised when the command cannot do its job; the message is printed, exit code 1."""


def add_token_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``relay enroll`` and ``relay token {rotate,revoke}``."""
    enroll = sub.add_parser(
        "enroll",
        allow_abbrev=False,
        help="enroll a host: grant it a base dir and its own orchestrator token",
        description="Enroll a host with a running relay: grant orchestrator ID a base dir and "
        "its own token, printed on stdout (or written to --out, mode 0600). Give that token to "
        "`relay host --token-file`; the admin token never needs to leave this machine.",
    )
    _common(enroll)
    enroll.add_argument("--base-dir", required=True, metavar="DIR",
                        help="absolute path: the host may register this folder or one inside it")
    enroll.add_argument("--hostname", default=None, metavar="H",
                        help="shown in the dashboard (default: the id, or what it had)")
    enroll.add_argument("--provider", action="append", choices=PROVIDERS, default=None,
                        metavar="P", help=f"repeat per provider ({', '.join(PROVIDERS)}); "
                        "default: all for a new host, unchanged for a known one")
    enroll.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="write the token to FILE (created 0600) instead of stdout")
    enroll.set_defaults(func=run_enroll)

    token = sub.add_parser(
        "token",
        allow_abbrev=False,
        help="rotate or revoke an orchestrator's token",
        description="Rotate or revoke an orchestrator's token on a running relay (admin only).",
    )
    actions = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    rotate = actions.add_parser(
        "rotate", help="issue a new token; the old one stops working at once",
        description="Issue a new orchestrator token (printed, or written to --out with mode "
        "0600); the old token is refused from that moment on.",
    )
    _common(rotate)
    rotate.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="write the token to FILE (created 0600) instead of stdout")
    rotate.set_defaults(func=run_rotate)
    revoke = actions.add_parser(
        "revoke", help="no token works for the orchestrator until it is rotated or re-enrolled",
        description="Revoke the orchestrator's token: no token works for it until an admin "
        "rotates it or enrolls the host again.",
    )
    _common(revoke)
    revoke.set_defaults(func=run_revoke)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relay", default=None, metavar="URL",
                   help=f"the relay's base URL [RELAY_URL] ({DEFAULT_URL})")
    p.add_argument("--id", required=True, metavar="ID", help="the orchestrator id")
    p.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                   help="file holding the admin token (else RELAY_TOKEN; never on the command line)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a plain http:// relay URL to another machine (tokens in clear)")
    # Caught to refuse it by name (argparse would otherwise read '--token X' as an
    # abbreviation of --token-file, and echo the secret in its error).
    p.add_argument("--token", dest="argv_token", default=None, help=argparse.SUPPRESS)


def _admin_token(args: argparse.Namespace, env: dict[str, str]) -> str | None:
    if args.argv_token is not None:
        raise TokenCliError(
            "--token is not accepted: a command line is visible to every local user "
            "(/proc/<pid>/cmdline); use --token-file PATH or RELAY_TOKEN"
        )
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise TokenCliError(f"--token-file {str(args.token_file)!r}: {e.strerror}") from None
        if not token:
            raise TokenCliError(f"--token-file {str(args.token_file)!r} is empty")
        return token
    return env.get("RELAY_TOKEN") or None


def _base_url(args: argparse.Namespace, env: dict[str, str]) -> str:
    url = (args.relay or env.get("RELAY_URL") or DEFAULT_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TokenCliError(f"--relay {url!r}: expected an http:// or https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        if not args.insecure:
            raise TokenCliError(
                f"--relay {url!r} is plain http to another machine: the admin token and the new "
                "token would cross the network in clear; use https (or --insecure on a network "
                "you trust)"
            )
        print(
            f"relay: warning: {url} is plain http to another machine; tokens cross the network "
            "in clear (use https)",
            file=sys.stderr,
        )
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _call(args: argparse.Namespace, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` to the relay; the answer's JSON, or TokenCliError with the relay's words."""
    env = environment()
    url = _base_url(args, env) + path
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = _admin_token(args, env)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # http(s) only: _base_url
            data = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = e.reason
        raise TokenCliError(f"the relay refused ({e.code}): {message}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TokenCliError(f"cannot reach the relay at {url}: {reason}") from None
    if not isinstance(data, dict):
        raise TokenCliError("the relay answered something that is not a JSON object")
    return data


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path``, readable by its owner only (0600, also if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _hand_out(args: argparse.Namespace, token: str, what: str) -> None:
    if args.out is None:
        print(token, flush=True)
        print(f"relay: {what}; the token above is shown once", file=sys.stderr)
        return
    try:
        write_secret(args.out, token)
    except OSError as e:
        raise TokenCliError(f"--out {str(args.out)!r}: {e.strerror}") from None
    print(f"relay: {what}; token written to {args.out} (mode 0600)", file=sys.stderr)


def _oid(args: argparse.Namespace) -> str:
    return quote(args.id, safe="")


def _guarded(run: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(run(args))
        except TokenCliError as e:
            print(f"relay: {e}", file=sys.stderr)
            return 1

    return wrapped


@_guarded
def run_enroll(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"baseDir": args.base_dir}
    if args.hostname is not None:
        body["hostname"] = args.hostname
    if args.provider:
        body["providers"] = list(dict.fromkeys(args.provider))
    data = _call(args, f"/api/orchestrators/{_oid(args)}/enroll", body)
    token = data.get("orchestratorToken")
    if not isinstance(token, str) or not token:
        raise TokenCliError("the relay answered without an orchestratorToken")
    _hand_out(args, token, f"enrolled {args.id!r} with base dir {data.get('baseDir')!r}")
    return 0


@_guarded
def run_rotate(args: argparse.Namespace) -> int:
    data = _call(args, f"/api/orchestrators/{_oid(args)}/token/rotate", {})
    token = data.get("orchestratorToken")
    if not isinstance(token, str) or not token:
        raise TokenCliError("the relay answered without an orchestratorToken")
    _hand_out(args, token, f"rotated the token of {args.id!r}; the old one no longer works")
    return 0


@_guarded
def run_revoke(args: argparse.Namespace) -> int:
    _call(args, f"/api/orchestrators/{_oid(args)}/token/revoke", {})
    print(f"relay: revoked the token of {args.id!r}; no token works for it until rotated or "
          "re-enrolled", file=sys.stderr)
    return 0
