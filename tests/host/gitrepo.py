"""Real git repositories for the worktree tests: made the way a person would make them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from relay.host.config import agent_base_env

ENV = {**agent_base_env(os.environ), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(cwd: Path, *args: str) -> str:
    """Run git as a person would (the test's own steps); fail loudly."""
    proc = subprocess.run(["git", *args], cwd=cwd, env={**ENV, "LC_ALL": "C"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


def make_repo(path: Path, branch: str = "main") -> Path:
    """A repository with one commit: README, sub/file.txt, and .gitignore of build/."""
    (path / "sub").mkdir(parents=True)
    (path / "README").write_text("hello\n")
    (path / "sub" / "file.txt").write_text("x\n")
    (path / ".gitignore").write_text("build/\n")
    git(path, "init", "-q", "-b", branch)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "init")
    return path
