"""A stand-in provider that asks a person: prints, asks ``Proceed? [y/N]``, reads a line, echoes it.

What it does comes from its prompt (the spawn's ``prompt``, after ``--``):

- ``ask``: print some work, ask ``Proceed? [y/N]``, read one line, echo it;
  and again, so one agent can be answered many times;
- ``wait``: print that it is ready, then read lines without asking anything
  (an agent that is merely idle), echoing each.

Each line it reads is appended, exactly as read, to ``$STUB_LOG`` as JSON
(``{"agentId", "answer"}``), with the variables a provider's hook would see,
so tests compare what arrived with what was sent, byte for byte. The
terminal stays in its usual (canonical) mode: what a person typing sees.
Standard library only: it runs under whatever environment tmux gives it.
"""

from __future__ import annotations

import json
import os
import sys


def record(**fields: object) -> None:
    path = os.environ.get("STUB_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (json.dumps({"agentId": os.environ.get("RELAY_AGENT_ID"), **fields}) + "\n").encode())
    os.close(fd)


def main() -> None:
    mode = sys.argv[-1] if len(sys.argv) > 1 else "ask"
    record(
        started=os.getpid(),
        commandId=os.environ.get("RELAY_COMMAND_ID"),
        hookEnv={k: os.environ.get(k) for k in ("RELAY_NOTIFY_DIR", "RELAY_AGENT_ID", "RELAY_TMUX_SESSION")},
        relayToken=os.environ.get("RELAY_TOKEN"),
    )
    if mode == "wait":
        print("stub: ready for instructions", flush=True)
    round_ = 0
    while True:
        if mode == "ask":
            round_ += 1
            print(f"stub: round {round_}: about to delete 3 files", flush=True)
            print("Proceed? [y/N] ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        record(answer=line)
        print(f"stub: you said {json.dumps(line)}", flush=True)


if __name__ == "__main__":
    main()
