"""Worktrees against real git, without a relay (relay/host/worktree.py, ADR 0034).

Each test builds a real repository in its own folder; git runs as the host
runs it (clean environment, ceiling at the base dir's parent).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.domain.errors import InvalidInputError
from relay.domain.rules import MAX_BRANCH_CHARS, check_branch
from relay.host import worktree as wt
from relay.host.config import (
    HostConfigError,
    parse_providers,
    read_config_file,
)
from tests.host.gitrepo import ENV, git, make_repo


def tool(base: Path) -> wt.Git:
    return wt.Git(ENV, Path(os.path.realpath(base)))


def create(base: Path, cwd: Path, agent_id: str, branch: str | None = None) -> wt.Worktree:
    return asyncio.run(wt.create(tool(base), Path(os.path.realpath(cwd)), agent_id, branch))


def refused(base: Path, cwd: Path, agent_id: str, branch: str | None, *words: str) -> str:
    with pytest.raises(wt.WorktreeError) as info:
        create(base, cwd, agent_id, branch)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return str(info.value)


def test_a_worktree_in_a_subfolder_runs_there_and_is_ignored_by_a_repo_base(tmp_path: Path) -> None:
    # The base dir is itself a repository: its worktrees must not show in its status.
    base = make_repo(tmp_path / "base")
    made = create(base, base / "sub", "agent-1")
    real = Path(os.path.realpath(base))
    assert made.path == real / ".relay" / "worktrees" / "agent-1"
    assert made.cwd == made.path / "sub" and made.cwd.is_dir()
    assert made.branch == "relay/agent-1" and made.created_branch
    assert git(made.cwd, "branch", "--show-current").strip() == "relay/agent-1"
    assert git(base, "status", "--porcelain", "--untracked-files=all") == ""
    # An existing branch that no worktree has checked out is taken as it is.
    git(base, "branch", "feature")
    again = create(base, base, "agent-2", "feature")
    assert again.branch == "feature" and not again.created_branch
    assert git(again.path, "branch", "--show-current").strip() == "feature"


def test_worktrees_that_cannot_be_made_say_why(tmp_path: Path) -> None:
    base = tmp_path / "base"
    repo = make_repo(base / "proj")
    (base / "plain").mkdir()
    refused(base, base / "plain", "a1", None, "not in a git repository inside the base dir")
    refused(base, repo, "a1", "main", "branch 'main' is already checked out at", str(repo))
    refused(base, repo, "a1", "bad..name", "git does not accept it as a branch name")
    # In a repository git --branch expands @{-1}: never taken for a name.
    git(repo, "checkout", "-q", "-b", "other")
    git(repo, "checkout", "-q", "main")
    refused(base, repo, "a1", "@{-1}", "git does not accept it")
    # A repository above the base dir is not found (the ceiling), and one whose git
    # folder lies outside it (a person's worktree of an outside repository) is refused.
    outer = make_repo(tmp_path / "outer")
    refused(outer / "sub", outer / "sub", "a1", None, "not in a git repository inside")
    git(outer, "worktree", "add", "-q", str(base / "theirs"))
    refused(base, base / "theirs", "a1", None, "has its git folder at", "outside the base dir")
    # A symlink planted where worktrees go would send them elsewhere: refused.
    (base / ".relay").symlink_to(tmp_path)
    refused(base, repo, "a1", None, "is not a plain folder")
    assert not (tmp_path / "worktrees").exists()
    assert "relay/a1" not in git(repo, "branch", "--list")


def test_a_worktree_without_cwds_folder_is_undone_with_its_branch(tmp_path: Path) -> None:
    base = tmp_path / "base"
    repo = make_repo(base / "proj")
    (repo / "untracked-dir").mkdir()  # exists here, not in the commit
    msg = refused(base, repo / "untracked-dir", "a1", None, "has no folder 'untracked-dir'")
    assert "worktree and branch 'relay/a1' were removed" in msg
    assert not (base / ".relay" / "worktrees" / "a1").exists()
    assert git(repo, "branch", "--list", "relay/a1") == ""
    assert "a1" not in git(repo, "worktree", "list")


def test_discard_keeps_a_branch_it_did_not_make_or_that_has_commits(tmp_path: Path) -> None:
    base = tmp_path / "base"
    repo = make_repo(base / "proj")
    git(repo, "branch", "mine")
    made = create(base, repo, "a1", "mine")
    assert "branch 'mine' kept" in asyncio.run(wt.discard(tool(base), made))
    assert git(repo, "branch", "--list", "mine").strip()
    made = create(base, repo, "a2")
    (made.path / "new.txt").write_text("work\n")
    git(made.path, "add", "new.txt")
    git(made.path, "commit", "-q", "-m", "work")
    assert "branch 'relay/a2' kept" in asyncio.run(wt.discard(tool(base), made))
    assert git(repo, "log", "--format=%s", "relay/a2").splitlines()[0] == "work"


def test_remove_touches_only_worktrees_it_made_and_forgets_vanished_ones(tmp_path: Path) -> None:
    base = tmp_path / "base"
    repo = make_repo(base / "proj")
    g = tool(base)
    why = asyncio.run(wt.remove(g, Path(os.path.realpath(repo)), repo))
    assert why is not None and "not a worktree this host made" in why
    assert (repo / "README").exists()
    made = create(base, repo, "a1")
    subprocess.run(["rm", "-rf", str(made.path)], check=True)
    assert asyncio.run(wt.remove(g, made.path, made.repo)) is None
    assert "a1" not in git(repo, "worktree", "list")


# -- how each provider resumes (config) ---------------------------------------------------


def test_resume_arguments_default_per_provider_and_can_be_set_or_refused(tmp_path: Path) -> None:
    defaults = parse_providers(["claude=claude", "codex=codex"])
    assert defaults["claude"].resume_args("claude", "s1") == ("--resume", "s1")
    assert defaults["codex"].resume_args("codex", "s1") == ("resume", "s1")
    path = tmp_path / "host.toml"
    path.write_text('[providers.codex]\ncommand = "codex"\nresume = ["-c", "resume={session}"]\n'
                    '[providers.claude]\ncommand = "claude"\nresume = false\n')
    from_file = parse_providers([], read_config_file(path))
    assert from_file["codex"].resume_args("codex", "s1") == ("-c", "resume=s1")
    with pytest.raises(HostConfigError, match="does not resume sessions"):
        from_file["claude"].resume_args("claude", "s1")
    # --resume-args wins over the file; NAME= refuses; a template is literal, never format().
    both = parse_providers([], read_config_file(path),
                           ["claude=--resume {session} --x={0}", "codex="])
    assert both["claude"].resume_args("claude", "s1") == ("--resume", "s1", "--x={0}")
    assert both["codex"].resume is None
    for specs, needle in [
        (["claude=--resume"], "must hold {session}"),
        (["gemini=x {session}"], "expected NAME=ARGS"),
        (["claude=a {session}", "claude=b {session}"], "twice"),
        (["claude='x {session}"], "cannot split"),
    ]:
        with pytest.raises(HostConfigError, match=needle):
            parse_providers(["claude=claude"], None, specs)
    with pytest.raises(HostConfigError, match="no such provider"):
        parse_providers(["claude=claude"], None, ["codex=resume {session}"])
    path.write_text('[providers.codex]\ncommand = "codex"\nresume = 3\n')
    with pytest.raises(HostConfigError, match=r"\.resume: expected"):
        parse_providers([], read_config_file(path))


# -- WT1: the relay's branch rule is git's ------------------------------------------------

TOKENS = ["a", "b", "Z", "9", "/", ".", "..", "@", "{", "}", "@{", "-", "~", "^", ":", "?",
          "*", "[", "\\", " ", "\t", "\x7f", "\x01", "lock", ".lock", "HEAD", "ä", "日", "_"]
# Parts joined by '/': mostly plain, with the starts, ends and characters git cares
# about drawn often, so that one rule at a time decides.
PLAIN = ["a", "b", "Z", "9", "_", "ä", "日", "x-y", "HEAD", "lock"]
SPECIAL = ["", "", "", "", ".", "..", "@", "@{", "{", "-", "~", "^", ":", "?", "*", "[", "\\",
           " ", "\x7f", "\x01", "/"]
parts = st.tuples(
    st.sampled_from(["", "", "", ".", "-", "@"]),
    st.lists(st.sampled_from(PLAIN), min_size=0, max_size=3).map("".join),
    st.sampled_from(SPECIAL),
    st.lists(st.sampled_from(PLAIN), min_size=0, max_size=2).map("".join),
    st.sampled_from(["", "", "", ".lock", ".", "lock", "@", "/"]),
).map("".join)
# Each of git's rules decided alone, always tried (Hypothesis runs explicit examples first).
EDGES = ["HEAD", "@", "-", "-x", "x/-y", "a..b", "a/.b", ".a", "a.", "a.lock", "a/b.lock/c",
         "a.lock/b", "a@{b", "a@b", "@x", "a//b", "/a", "a/", "a b", "a~b", "a^b", "a:b", "a?b",
         "a*b", "a[b", "a\\b", "a\x7fb", "a\x01b", "x/HEAD", "HEAD/x", "ä/日", "a.lockx"]
names = st.one_of(
    st.lists(parts, min_size=1, max_size=3).map("/".join),
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8).map("".join),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1, max_size=12),
)


def git_takes(name: str, cwd: Path) -> bool:
    proc = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=cwd,
                          env={**ENV, "GIT_CEILING_DIRECTORIES": str(cwd.parent)},
                          capture_output=True, check=False)
    return proc.returncode == 0 and proc.stdout.decode("utf-8", "replace").strip() == name


def _with_edges(test):  # type: ignore[no-untyped-def]
    for name in reversed(EDGES):
        test = example(name=name)(test)
    return test


@settings(max_examples=300)
@_with_edges
@given(name=names)
def test_wt1_the_relays_branch_rule_is_gits(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    """A name passes ``check_branch`` exactly when ``git check-ref-format --branch`` takes it
    (outside a repository), but for ``@``, which the relay refuses on purpose."""
    try:
        check_branch("branch", name)
        relay_takes = True
    except InvalidInputError:
        relay_takes = False
    if name == "@" or len(name) > MAX_BRANCH_CHARS:
        assert not relay_takes
        return
    cwd = tmp_path_factory.getbasetemp()
    assert relay_takes == git_takes(name, cwd), (name, relay_takes)


# -- WT2: removing a worktree never loses work ------------------------------------------

edits = st.lists(
    st.sampled_from(["untracked", "modify", "stage", "delete", "ignored", "commit", "nested"]),
    max_size=4,
)


@settings(max_examples=25)
@given(steps=edits)
def test_wt2_a_worktree_is_removed_only_when_nothing_would_be_lost(
    tmp_path_factory: pytest.TempPathFactory, steps: list[str]
) -> None:
    """After any edits, ``remove`` removes the worktree only if every change is committed
    (ignored files aside); committed work stays on the branch either way."""
    base = tmp_path_factory.mktemp("w2")
    repo = make_repo(base / "proj")
    made = create(base, repo, "a1")
    path = made.path
    committed = 0
    for i, step in enumerate(steps):
        if step == "untracked":
            (path / f"new-{i}.txt").write_text("new\n")
        elif step == "nested":
            (path / "sub" / f"deep-{i}").mkdir(exist_ok=True)
            (path / "sub" / f"deep-{i}" / "f").write_text("deep\n")
        elif step == "modify":
            (path / "README").write_text(f"changed {i}\n")
        elif step == "stage":
            (path / f"staged-{i}.txt").write_text("s\n")
            git(path, "add", f"staged-{i}.txt")
        elif step == "delete":
            (path / "sub" / "file.txt").unlink(missing_ok=True)
        elif step == "ignored":
            (path / "build").mkdir(exist_ok=True)
            (path / "build" / f"out-{i}").write_text("o\n")
        elif step == "commit":
            git(path, "add", "-A")
            if git(path, "status", "--porcelain"):
                git(path, "commit", "-q", "-m", f"c{i}")
                committed += 1
    dirty = git(path, "status", "--porcelain", "--untracked-files=all") != ""
    kept = asyncio.run(wt.remove(tool(base), path, made.repo))
    assert (kept is not None) == dirty, (steps, kept)
    assert path.exists() == dirty
    if kept is not None:
        assert "uncommitted or untracked changes" in kept
    assert int(git(repo, "rev-list", "--count", "relay/a1")) == 1 + committed
