"""The shim tmux runs in a new session: read a spec file, delete it, exec the provider.

Why a shim instead of passing the command to tmux directly: tmux runs a
one-word command through ``sh -c``, and ``new-session -e KEY=VALUE`` would put
the env file's secrets on a command line that ``ps`` shows. The spec file is
created 0600 by the daemon and removed here before the exec, so values travel
only through the file system and ``execve``, and nothing is parsed by a shell.

Runs as a plain script (``python -I launch.py SPEC``): standard library only,
so it works whatever the tmux server's environment and ``sys.path`` are.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

PANE_VARS = ("TERM", "COLORTERM", "TMUX", "TMUX_PANE")


def main(argv: list[str]) -> int:
    """Exec the spec's argv in its cwd with its env; 127 if that is impossible."""
    if len(argv) != 2:
        print("usage: launch.py SPEC_FILE", file=sys.stderr)
        return 2
    spec_path = argv[1]
    try:
        with open(spec_path, encoding="utf-8") as fh:
            spec = json.load(fh)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spec_path)
    args = [str(a) for a in spec["argv"]]
    # The spec's env is the whole environment (the daemon decides what agents
    # see, whatever the tmux server inherited); only what tmux sets for the
    # pane itself is kept from here.
    env = {k: os.environ[k] for k in PANE_VARS if k in os.environ}
    env.update({str(k): str(v) for k, v in spec.get("env", {}).items()})
    try:
        os.chdir(spec["cwd"])
        os.execvpe(args[0], args, env)
    except OSError as exc:
        print(f"relay host: cannot start {args[0]!r}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
