"""Git worktrees for agents: one branch and one folder each, inside the base dir (ADR 0034).

A spawn with ``worktree`` runs its agent in a new worktree of the repository
that holds the spawn's cwd, at ``<base>/.relay/worktrees/<agentId>``:

- inside the base dir, so the confinement rule (ADR 0017's sibling: an agent
  works only below ``--base-dir``) holds for worktrees with no new rule, and
  the relay can check the reported path like any cwd;
- under a hidden folder, so the host's directory listing (what the dashboard
  offers as a cwd) does not show it, and a ``.gitignore`` of ``*`` there keeps
  it out of ``git status`` when the base dir is itself a repository;
- named by the agent id, so a daemon killed mid-spawn finds it again.

Every git call is ``asyncio.create_subprocess_exec`` with an argv list (no
shell), the agents' clean environment (nothing of the daemon's own), ``LC_ALL=C``
so the reasons shown to an operator are git's plain words, and
``GIT_CEILING_DIRECTORIES`` at the base dir's parent, so a folder that is not
in a repository inside the base dir never finds one above it (a home folder
kept in git, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

WORKTREES_DIR = (".relay", "worktrees")
BRANCH_PREFIX = "relay/"
GIT_TIMEOUT = 120.0  # a checkout of a large repository takes a while; a hung git must not
MAX_LISTED_CHANGES = 10
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


class WorktreeError(Exception):
    """Raised when a worktree cannot be made or used; the message is the reported reason."""


@dataclass(frozen=True)
class Worktree:
    """A worktree made for one agent."""

    path: Path  # the worktree's top folder (resolved)
    branch: str
    repo: Path  # the repository's main top folder, where ``git worktree`` runs
    cwd: Path  # where the agent works: ``path`` plus cwd's place in the repository
    created_branch: bool  # the branch was made for it (so it may be deleted on a failed spawn)


class Git:
    """Runs git with a clean environment and a deadline."""

    def __init__(self, env: Mapping[str, str], base_real: Path, timeout: float = GIT_TIMEOUT) -> None:
        self.base_real = base_real
        self.timeout = timeout
        self.env = {
            **env,
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_OPTIONAL_LOCKS": "0",  # status must not take the index lock from a person's git
            "GIT_CEILING_DIRECTORIES": str(base_real.parent),
        }
        self.binary = shutil.which("git", path=self.env.get("PATH"))

    async def run(self, cwd: Path, *args: str) -> tuple[int, str, str]:
        """``git ARGS`` in ``cwd``: (exit status, stdout, stderr stripped)."""
        if self.binary is None:
            raise WorktreeError("git is not installed on this host (or not on its PATH)")
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *args, cwd=cwd, env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise WorktreeError(f"cannot run git in {str(cwd)!r}: {exc.strerror or exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise WorktreeError(
                f"git {args[0]} did not finish within {self.timeout:g}s in {str(cwd)!r}"
            ) from None
        return (
            proc.returncode or 0,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace").strip(),
        )

    async def ok(self, cwd: Path, *args: str, doing: str) -> str:
        """``git ARGS``'s output; a failure raises with git's own reason."""
        code, out, err = await self.run(cwd, *args)
        if code != 0:
            raise WorktreeError(f"{doing}: {_first_lines(err) or f'git exited with {code}'}")
        return out


def _first_lines(text: str, n: int = 3) -> str:
    lines = [line.removeprefix("fatal: ").removeprefix("error: ") for line in text.splitlines()]
    return "; ".join(line for line in lines[:n] if line)


def _inside(path: Path, base: Path) -> bool:
    return path == base or path.is_relative_to(base)


def worktrees_root(base_real: Path) -> Path:
    """``<base>/.relay/worktrees``, made if missing; refused if any part is not a plain folder.

    A symlink planted there (by an agent, which may write in the base dir)
    would send worktrees outside the base dir: each part is checked with
    ``lstat``, never followed.
    """
    path = base_real
    for part in WORKTREES_DIR:
        path = path / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        st = os.lstat(path)
        if not _is_plain_dir(st.st_mode):
            raise WorktreeError(
                f"{str(path)!r} is not a plain folder (a symlink?); worktrees are not made there"
            )
        if part == WORKTREES_DIR[0]:
            _ignore_everything(path)
    return path


def _is_plain_dir(mode: int) -> bool:
    return stat.S_ISDIR(mode) and not stat.S_ISLNK(mode)


def _ignore_everything(folder: Path) -> None:
    """A ``.gitignore`` of ``*``: a base dir that is a repository does not see its worktrees."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(folder / ".gitignore", flags, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write("# made by relay host: agents' worktrees (docs/adr/0034)\n*\n")


def default_branch(agent_id: str) -> str:
    """``relay/<agentId>``: readable, grouped in ``git branch``, unique per spawn."""
    return BRANCH_PREFIX + agent_id


async def create(git: Git, cwd: Path, agent_id: str, branch: str | None) -> Worktree:
    """Make a worktree of the repository holding ``cwd`` (a resolved folder in the base dir)."""
    base = git.base_real
    if not _SAFE_NAME.fullmatch(agent_id):
        raise WorktreeError(f"agent id {agent_id!r} cannot name a worktree folder")
    out = await git.ok(
        cwd, "rev-parse", "--show-prefix", "--path-format=absolute", "--show-toplevel",
        "--git-common-dir",
        doing=f"cwd {str(cwd)!r} is not in a git repository inside the base dir {str(base)!r}",
    )
    lines = out.split("\n")
    if len(lines) < 3:
        raise WorktreeError(f"git rev-parse gave an unexpected answer in {str(cwd)!r}: {out!r}")
    prefix, toplevel, common = lines[0], Path(lines[1]), Path(lines[2])
    repo = Path(os.path.realpath(toplevel))
    for what, path in (("its top folder", repo), ("its git folder", common)):
        real = Path(os.path.realpath(path))
        if not _inside(real, base):
            raise WorktreeError(
                f"the repository of {str(cwd)!r} has {what} at {str(real)!r}, outside the "
                f"base dir {str(base)!r}; worktrees are made only of repositories inside it"
            )
    name = branch or default_branch(agent_id)
    code, out, _ = await git.run(repo, "check-ref-format", "--branch", name)
    # In a repository ``--branch`` also expands ``@{-1}`` and the like: only a name
    # that stays itself is taken literally.
    if code != 0 or out.strip() != name:
        raise WorktreeError(f"branch {name!r}: git does not accept it as a branch name")
    await _refuse_checked_out(git, repo, name)
    exists = (await git.run(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"))[0] == 0
    root = worktrees_root(base)
    path = root / agent_id
    if os.path.lexists(path):
        raise WorktreeError(f"{str(path)!r} already exists; a worktree is never made over it")
    if exists:
        args = ["worktree", "add", str(path), name]
    else:
        args = ["worktree", "add", "-b", name, str(path), "HEAD"]
    await git.ok(repo, *args, doing=f"git could not make a worktree of {str(repo)!r} on {name!r}")
    made = Worktree(path=path, branch=name, repo=repo, cwd=path / prefix, created_branch=not exists)
    real = Path(os.path.realpath(path))
    if real != path or not _inside(real, base):
        await discard(git, made)
        raise WorktreeError(f"the worktree {str(path)!r} resolved to {str(real)!r}; not used")
    if not made.cwd.is_dir():
        note = await discard(git, made)
        raise WorktreeError(
            f"the worktree has no folder {prefix.rstrip('/')!r} (cwd's place in the repository: "
            f"it is not in the commit checked out); {note}"
        )
    return made


async def _refuse_checked_out(git: Git, repo: Path, branch: str) -> None:
    """Git checks a branch out in one worktree at a time: say where it is, and how to free it."""
    out = await git.ok(repo, "worktree", "list", "--porcelain",
                       doing=f"cannot list the worktrees of {str(repo)!r}")
    for block in out.split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in block.splitlines() if line)
        if fields.get("branch") == f"refs/heads/{branch}":
            where = fields.get("worktree", "?")
            hint = (
                f" (which no longer exists: `git worktree prune` in {str(repo)!r} forgets it)"
                if "prunable" in fields else ""
            )
            raise WorktreeError(f"branch {branch!r} is already checked out at {where!r}{hint}")


async def changes(git: Git, path: Path) -> list[str]:
    """Uncommitted and untracked changes (``XY path``, as ``git status --short``); [] if clean."""
    out = await git.ok(
        path, "status", "--porcelain=v1", "-z", "--untracked-files=all",
        doing=f"cannot read the state of the worktree {str(path)!r}",
    )
    entries: list[str] = []
    items = iter(out.split("\0"))
    for item in items:
        if not item:
            continue
        entries.append(item)
        if item[:1] in ("R", "C"):
            next(items, None)  # a rename's source path follows
    return entries


async def remove(git: Git, path: Path, repo: Path) -> str | None:
    """Remove the worktree if it has no changes: None when done, else why it was kept.

    Ignored files (build output) go with it, as with ``git worktree remove``;
    the branch stays, with every commit made on it.
    """
    base = git.base_real
    root = base.joinpath(*WORKTREES_DIR)
    if path.parent != root or not _SAFE_NAME.fullmatch(path.name):
        return f"{str(path)!r} is not a worktree this host made (under {str(root)!r}); not touched"
    if not os.path.lexists(path):
        # Gone already (removed by hand): let git forget it too.
        await git.run(repo, "worktree", "prune")
        return None
    try:
        changed = await changes(git, path)
    except WorktreeError as exc:
        return str(exc)
    if changed:
        shown = ", ".join(changed[:MAX_LISTED_CHANGES])
        more = len(changed) - MAX_LISTED_CHANGES
        if more > 0:
            shown += f" and {more} more"
        return f"it has uncommitted or untracked changes: {shown}"
    code, _, err = await git.run(repo, "worktree", "remove", str(path))
    if code != 0:
        return f"git would not remove it: {_first_lines(err) or f'git exited with {code}'}"
    return None


async def discard(git: Git, made: Worktree) -> str:
    """Undo a worktree of a spawn that did not start: remove it if clean, and its new branch
    if nothing was committed on it (``git branch -d`` refuses otherwise). Says what it did."""
    try:
        kept = await remove(git, made.path, made.repo)
    except WorktreeError as exc:
        kept = str(exc)
    if kept is not None:
        return f"its worktree {str(made.path)!r} was kept: {kept}"
    if made.created_branch:
        try:
            code = (await git.run(made.repo, "branch", "-d", made.branch))[0]
        except WorktreeError:
            code = 1
        if code == 0:
            return f"its worktree and branch {made.branch!r} were removed"
    return f"its worktree was removed (branch {made.branch!r} kept)"
