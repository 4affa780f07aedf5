"""Rules of the contract that are pure functions of their inputs.

They live in the domain so that the aggregates, the HTTP edge and the tests all
apply the same rule; nothing here reads the clock, the disk or the network.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import Any

from relay.domain.errors import InvalidInputError

PROVIDERS: tuple[str, ...] = ("claude", "codex")
APPROVAL_MODES: tuple[str, ...] = ("open", "guarded", "read-only")
DEFAULT_APPROVAL_MODE = "guarded"
ACTIONS: tuple[str, ...] = ("restart", "shutdown")
RESULT_STATUSES: tuple[str, ...] = ("done", "failed")
MAX_PROMPT_CHARS = 4000
# Needs-input and answers (issue 16, ADR 0032, 0033).
INPUT_ACTION = "input"
ATTENTIONS: tuple[str, ...] = ("input", "idle")
MAX_INPUT_CHARS = 4000
MAX_ATTENTION_REASON = 200
MAX_ATTENTION_EXCERPT = 2000
MAX_ID_CHARS = 120
ORCHESTRATOR_AGENT_PREFIX = "orchestrator-"
# An orchestrator is also the agent ``orchestrator-<id>``, and that id must fit
# the id limit too; so orchestrator ids leave room for the prefix.
MAX_ORCHESTRATOR_ID_CHARS = MAX_ID_CHARS - len(ORCHESTRATOR_AGENT_PREFIX)

# Worktrees and resumed sessions (issue 16, ADR 0034).
MAX_BRANCH_CHARS = 200
MAX_SESSION_ID_CHARS = 128
# Conservative on purpose: it goes into a provider's argv, so it must never
# look like an option (first character alphanumeric) nor hold anything a
# template could misread ('{', '}') or a terminal could show strangely.
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
# What git refuses anywhere in a ref name (refs.c, check_refname_component):
# control characters, DEL, space and ~ ^ : ? * [ \
_REF_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")

_ID = re.compile(r"[\x21-\x2e\x30-\x7e\u00a1-\U0010ffff]{1,120}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_id(field: str, value: object) -> str:
    """Ids are 1-120 printable characters without '/' or whitespace (they go into URLs)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(field, "must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInputError(field, f"must be at most {MAX_ID_CHARS} characters")
    if not _ID.fullmatch(value) or not value.isprintable():
        raise InvalidInputError(
            field, "must be printable characters without '/' or whitespace"
        )
    return value


def check_orchestrator_id(field: str, value: object) -> str:
    """An id, short enough that its agent id ``orchestrator-<id>`` is one too."""
    oid = check_id(field, value)
    if len(oid) > MAX_ORCHESTRATOR_ID_CHARS:
        raise InvalidInputError(
            field,
            f"an orchestrator id must be at most {MAX_ORCHESTRATOR_ID_CHARS} characters "
            f"(its agent id {ORCHESTRATOR_AGENT_PREFIX}<id> must fit {MAX_ID_CHARS})",
        )
    return oid


def check_env_key(field: str, value: object) -> str:
    """Only names of variables travel; a value smuggled in as 'K=V' is refused."""
    if not isinstance(value, str) or not _ENV_KEY.fullmatch(value) or len(value) > 256:
        raise InvalidInputError(
            field, "must be environment variable names (letters, digits, '_'), never values"
        )
    return value


def orchestrator_agent_id(orchestrator_id: str) -> str:
    """An orchestrator is also an agent, under this id."""
    return ORCHESTRATOR_AGENT_PREFIX + orchestrator_id


def orchestrator_of_agent_id(agent_id: str) -> str | None:
    """The orchestrator whose own agent record ``agent_id`` would be, or None.

    The inverse of ``orchestrator_agent_id`` and the one place that reads the
    prefix back: whether that orchestrator exists is for the caller to ask.
    """
    if agent_id.startswith(ORCHESTRATOR_AGENT_PREFIX):
        return agent_id[len(ORCHESTRATOR_AGENT_PREFIX) :]
    return None


def deadline_at(asked_seconds: float | None, most_seconds: float, at: int) -> int:
    """When a command expires: a request may ask for a shorter deadline than the relay's,
    never a longer one."""
    seconds = most_seconds if asked_seconds is None else min(float(asked_seconds), most_seconds)
    return at + int(seconds * 1000)


def is_silent(last_seen: int, now: int, stale_after_ms: int, grace_from: int) -> bool:
    """Silent for longer than stale-after at ``now``: the one staleness rule.

    Silence that overlapped the relay's own downtime never counts, so the
    clock starts no earlier than ``grace_from`` (when this relay started).
    """
    return now - max(last_seen, grace_from) > stale_after_ms


def confine_cwd(base_dir: str, cwd: str | None, field: str = "cwd") -> str:
    """Resolve ``cwd`` against ``base_dir`` and refuse anything outside it.

    Compares normalised path components, never string prefixes: ``..`` and a
    sibling such as ``/srv/a2`` for base ``/srv/a`` are outside. Symlinks can
    only be resolved on the host itself, which re-checks with the real path.
    """
    base = posixpath.normpath(base_dir)
    if cwd is None or cwd == "":
        return base
    if "\x00" in cwd:
        raise InvalidInputError(field, "must not contain NUL characters")
    joined = cwd if posixpath.isabs(cwd) else posixpath.join(base, cwd)
    path = posixpath.normpath(joined)
    # normpath keeps a leading '//' (POSIX allows it a meaning); treat it as '/'.
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    base_parts = [p for p in base.split("/") if p]
    path_parts = [p for p in path.split("/") if p]
    if path_parts[: len(base_parts)] != base_parts:
        raise InvalidInputError(field, f"must be inside the orchestrator's baseDir {base}")
    return path


def check_managed_agents(base_dir: str, agents: list[dict[str, Any]]) -> None:
    """A host may only report agents working inside its base dir (the spawn rule).

    The relay compares path components lexically; the host resolved symlinks
    when it started the agent (relay/host/config.py ``resolve_inside``).
    """
    for i, agent in enumerate(agents):
        # A worktree is where the agent works too (ADR 0034): the same rule.
        for key, verb in (("cwd", "works in"), ("worktree", "has its worktree at")):
            path = agent.get(key)
            if not path:
                continue  # not reported: nothing to confine
            try:
                confine_cwd(base_dir, path, f"agents[{i}].{key}")
            except InvalidInputError as e:
                raise InvalidInputError(
                    e.field, f"managed agent {agent.get('agentId')!r} {verb} {path!r}, "
                    f"which is not inside the orchestrator's baseDir {posixpath.normpath(base_dir)}"
                ) from None


def _control(text: str) -> int | None:
    """Index of the first control character other than tab and newline, if any."""
    for i, ch in enumerate(text):
        if ch not in "\t\n" and unicodedata.category(ch) == "Cc":
            return i
    return None


def check_printable(field: str, value: str) -> str:
    """Text a person could type or read: no control characters but tab and newline.

    An escape, a carriage return, DEL or a raw Ctrl-C would steer a terminal
    (or a dashboard) rather than say something; the message names the code point.
    """
    bad = _control(value)
    if bad is not None:
        raise InvalidInputError(
            field,
            f"holds the control character U+{ord(value[bad]):04X} at index {bad}; only "
            "printable characters, tab and newline are allowed",
        )
    return value


def check_input_text(text: str, enter: bool) -> str:
    """What an operator types into an agent: printable, at most MAX_INPUT_CHARS, and something
    (empty text only when Enter follows)."""
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidInputError("text", f"must be at most {MAX_INPUT_CHARS} characters")
    check_printable("text", text)
    if not text and not enter:
        raise InvalidInputError("text", "is empty and enter is false: there is nothing to type")
    return text


def check_attention_text(field: str, value: str, limit: int) -> str:
    """A reason or excerpt the host reports: bounded, printable (tab and newline allowed)."""
    if len(value) > limit:
        raise InvalidInputError(field, f"must be at most {limit} characters")
    return check_printable(field, value)


# -- message targets (ADR 0010): an agent id, or a broadcast ----------------------------

BROADCAST_ALL = "*"
LABEL_PREFIX = "label:"
TAG_PREFIX = "tag:"
MAX_TARGET_NAME = 200


def is_broadcast(to: str) -> bool:
    """``*``, ``label:X`` and ``tag:X`` reach every matching agent; anything else is an agent id."""
    return to == BROADCAST_ALL or to.startswith((LABEL_PREFIX, TAG_PREFIX))


def check_target(field: str, to: object) -> str:
    """A message's ``to``: an agent id, ``label:X``, ``tag:X`` or ``*``."""
    if not isinstance(to, str) or not to:
        raise InvalidInputError(field, "is required: an agent id, 'label:X', 'tag:X' or '*'")
    if to.startswith((LABEL_PREFIX, TAG_PREFIX)):
        name = to.partition(":")[2]
        if not name or len(name) > MAX_TARGET_NAME or "\x00" in name:
            raise InvalidInputError(
                field, f"needs a name of 1-{MAX_TARGET_NAME} characters after the ':'"
            )
    elif to != BROADCAST_ALL:
        check_id(field, to)
    return to


def check_agent_id(field: str, value: object) -> str:
    """An id an agent may register under: not an orchestrator's, not a message target."""
    aid = check_id(field, value)
    if orchestrator_of_agent_id(aid) is not None:
        raise InvalidInputError(
            field,
            f"ids starting with {ORCHESTRATOR_AGENT_PREFIX!r} are reserved for orchestrators; "
            "register the orchestrator instead",
        )
    if is_broadcast(aid):
        raise InvalidInputError(
            field, "'*' and ids starting with 'label:' or 'tag:' are message targets, not agent ids"
        )
    return aid


def check_branch(field: str, value: object) -> str:
    """A name git takes for a new branch (``git check-ref-format --branch``), and not ``@``.

    Git's own rules, so a spawn is refused here rather than failing on the
    host: no component starting with ``.`` or ending in ``.lock``, no ``..``,
    ``@{``, ``//``, control characters, space or ``~^:?*[\\``; not starting with
    ``-`` or ``/``, not ending with ``/`` or ``.``, not ``HEAD``. ``@`` alone is
    refused too: git takes it, but it also means HEAD. The host asks git again.
    """
    if not isinstance(value, str) or not value:
        raise InvalidInputError(field, "must be a non-empty branch name")
    if len(value) > MAX_BRANCH_CHARS:
        raise InvalidInputError(field, f"must be at most {MAX_BRANCH_CHARS} characters")
    problem = _branch_problem(value)
    if problem is not None:
        raise InvalidInputError(field, f"{value!r} is not a branch name git accepts: {problem}")
    return value


def _branch_problem(name: str) -> str | None:
    if name.startswith("-"):
        return "it starts with '-'"
    if name in ("HEAD", "@"):
        return f"{name!r} names the checked-out commit, not a branch"
    bad = _REF_BAD_CHARS.search(name)
    if bad is not None:
        return f"it contains {bad.group()!r} (no spaces, control characters or ~^:?*[\\)"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name:
        return "it contains '@{'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if not part:
            return "it has an empty part (a leading, trailing or double '/')"
        if part.startswith("."):
            return f"the part {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"the part {part!r} ends with '.lock'"
    return None


def check_session_id(field: str, value: object) -> str:
    """A provider's session id: 1-128 of ``A-Za-z0-9._-``, starting alphanumeric."""
    if not isinstance(value, str) or not _SESSION_ID.fullmatch(value):
        raise InvalidInputError(
            field,
            f"must be a session id: 1-{MAX_SESSION_ID_CHARS} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return value
