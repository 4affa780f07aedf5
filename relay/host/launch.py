"""The shim tmux runs in a new session: read a spec file, delete it, exec the provider.

Why a shim instead of passing the command to tmux directly: tmux runs a
one-word command through ``sh -c``, and ``new-session -e KEY=VALUE`` would put
the env file's secrets on a command line that ``ps`` shows. The spec file is
created 0600 by the daemon and removed here before the exec, so values travel
only through the file system and ``execve``, and nothing is parsed by a shell.

It is also where the agent's working directory is entered, because that is
the last moment before the provider runs: the daemon checked the path, but a
directory can be swapped for a symlink between that check and a ``chdir`` by
name. So the shim walks the resolved path one component at a time with
``O_NOFOLLOW`` (a symlink anywhere on the way is refused), ``fchdir``s to the
handle it ends with and checks the real path once more: an agent never starts
outside the base dir, whatever races the file system.

Runs as a plain script (``python -I launch.py SPEC``): standard library only,
so it works whatever the tmux server's environment and ``sys.path`` are.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

PANE_VARS = ("TERM", "COLORTERM", "TMUX", "TMUX_PANE")
REFUSED = 126  # the exit status when the cwd cannot be entered safely


class EscapedError(OSError):
    """Raised when the working directory is not (or no longer) inside the base dir."""


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def enter_inside(cwd: str, base: str) -> None:
    """``chdir`` to ``cwd`` through no symlink at all, and only if it is inside ``base``.

    Both are absolute, already resolved paths; any symlink met now was put
    there after the daemon resolved them, so it is refused rather than followed.
    """
    if not (os.path.isabs(cwd) and os.path.isabs(base)) or not _inside(cwd, base):
        raise EscapedError(f"cwd {cwd!r} is not inside the base dir {base!r}")
    parts = [p for p in cwd.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise EscapedError(f"cwd {cwd!r} is not a resolved path")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open("/", flags)
    try:
        for part in parts:
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise EscapedError(
                    f"cannot enter {cwd!r} safely at {part!r}: {exc.strerror or exc} "
                    "(a symlink or a missing directory appeared after the check)"
                ) from exc
            os.close(fd)
            fd = child
        os.fchdir(fd)
    finally:
        os.close(fd)
    real = os.getcwd()
    if not _inside(real, base):
        raise EscapedError(f"cwd {cwd!r} is really {real!r}, outside the base dir {base!r}")


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
        enter_inside(spec["cwd"], spec.get("base") or spec["cwd"])
    except OSError as exc:
        print(f"relay host: refused to start {args[0]!r}: {exc}", file=sys.stderr)
        return REFUSED
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        print(f"relay host: cannot start {args[0]!r}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
