"""A stand-in for ``claude``/``codex``: registers as an agent and heartbeats until killed.

The host daemon starts it in tmux exactly as it would start a real provider.
Each start appends one JSON line to ``$STUB_LOG`` (pid, argv, cwd, the git
branch checked out there, command id, the env file's test value), so tests can
count how often a command really ran.
Standard library only: it runs under whatever environment tmux gives it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def post(url: str, body: dict[str, object]) -> None:
    """POST JSON, ignoring failures: the relay may be restarting."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5):
            pass
    except OSError:
        pass


def parse_like_a_provider(argv: list[str]) -> dict[str, object]:
    """Read argv the way claude/codex do (options, then one positional prompt).

    So a test sees what a real provider would make of its command line: a
    prompt that looks like a flag is a flag unless it comes after ``--``.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--permission-mode")
    parser.add_argument("--dangerously-skip-permissions", action="store_true")
    parser.add_argument("--sandbox")
    parser.add_argument("--ask-for-approval")
    parser.add_argument("--resume")
    parser.add_argument("prompt", nargs="?")
    known, unknown = parser.parse_known_args(argv)
    return {**vars(known), "unknown": unknown}


def git_branch() -> str | None:
    """The branch checked out where it runs, as a provider in a worktree would see it."""
    proc = subprocess.run(["git", "branch", "--show-current"], capture_output=True, text=True,
                          timeout=10, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> None:
    """Record this start, register, then heartbeat until a signal ends the process."""
    relay = os.environ["RELAY_URL"]
    agent_id = os.environ["RELAY_AGENT_ID"]
    record = {
        "agentId": agent_id,
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "parsed": parse_like_a_provider(sys.argv[1:]),
        "cwd": os.getcwd(),
        "branch": git_branch(),
        "commandId": os.environ.get("RELAY_COMMAND_ID"),
        "approvalMode": os.environ.get("RELAY_APPROVAL_MODE"),
        "secret": os.environ.get("STUB_SECRET"),
        "relayToken": os.environ.get("RELAY_TOKEN"),
        "inherited": os.environ.get("HOST_MARKER"),
        "term": os.environ.get("TERM"),
    }
    log = os.environ.get("STUB_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.close(fd)
    if "--exit-status" in sys.argv:
        # A provider that dies at once (a bad key, a broken install): the crash-loop tests.
        print(f"stub: exiting at once as asked (pid {os.getpid()})", flush=True)
        sys.exit(int(sys.argv[sys.argv.index("--exit-status") + 1]))
    post(f"{relay}/api/agents", {
        "id": agent_id, "name": agent_id, "machine": socket.gethostname(),
        "capabilities": ["stub"], "meta": {"pid": os.getpid()},
    })
    while True:
        time.sleep(0.5)  # a provider's own pace, not test synchronisation
        post(f"{relay}/api/agents/{agent_id}/heartbeat", {})


if __name__ == "__main__":
    main()
