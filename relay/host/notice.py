"""``relay host notify``'s side of needs-input (ADR 0032): a hook call into a notice file.

A provider's hook runs inside the agent, often: this module is what it
imports, so it stays standard library only (the daemon's own parts pull in
aiohttp, which alone takes longer to import than a hook should run). The
daemon reads the same files with ``read_notices``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
import unicodedata
from pathlib import Path
from typing import Any

log = logging.getLogger("relay.host")

MAX_REASON = 200  # the relay's limits (relay.domain.rules)
MAX_EXCERPT = 2000
MAX_NOTICE_BYTES = 64 * 1024
MAX_NOTICES = 500  # notices read per look; more wait for the next one
MAX_SESSION_ID = 200
FORMAT = 1


def printable(line: str) -> str:
    """A provider's output line without control characters (escapes, bells)."""
    return "".join(
        c if c == "\t" or unicodedata.category(c)[0] != "C" else "\ufffd" for c in line
    )


# What Claude Code's hooks mean for attention (its hook JSON: hook_event_name,
# notification_type, message, session_id). A Notification is a question unless
# it says idle, answered (an elicitation's completion or response) or nothing
# (auth_success). Hooks that show the agent at work again clear it. Any other
# hook only tells the session id.
IDLE_NOTIFICATIONS = frozenset({"idle_prompt"})
SILENT_NOTIFICATIONS = frozenset({"auth_success"})
ANSWERED_NOTIFICATIONS = frozenset({"elicitation_complete", "elicitation_response"})
RESUMING_HOOKS = frozenset({"UserPromptSubmit", "PreToolUse", "PostToolUse"})
KEEP = "keep"  # a notice that leaves attention as it is


# -- the notice file: written by ``relay host notify``, read by the daemon --------------------


def clip_end(text: str, limit: int) -> str:
    """The end of ``text`` within ``limit`` characters (the last lines say most)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def clean(text: str, limit: int) -> str:
    """Printable (tab and newline kept), within ``limit``: what the relay accepts."""
    lines = [printable(line) for line in text.split("\n")]
    return clip_end("\n".join(lines), limit)


def hook_notice(
    hook: dict[str, Any], override: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """What one provider hook call means: attention (or KEEP), a reason, the session id.

    ``override`` (``input``, ``idle`` or ``none``) is ``relay host notify
    --attention``, for providers whose hooks say nothing we can read.
    """
    event = str(hook.get("hook_event_name") or "")
    kind = str(hook.get("notification_type") or "")
    message = str(hook.get("message") or "")
    attention: str | None
    if override is not None:
        attention = None if override == "none" else override
        why = reason or message or event or "relay host notify"
    elif event == "Notification" or (not event and message):
        if kind in SILENT_NOTIFICATIONS:
            attention, why = KEEP, ""
        elif kind in ANSWERED_NOTIFICATIONS:
            attention, why = None, f"hook: {kind}"
        else:
            attention = "idle" if kind in IDLE_NOTIFICATIONS else "input"
            why = f"{kind}: {message}" if kind and message else (kind or message or "Notification")
    elif event == "Stop":
        attention, why = "idle", "Stop: the agent finished its turn"
    elif event in RESUMING_HOOKS:
        attention, why = None, f"hook: {event}"
    else:
        attention, why = KEEP, ""
    session = hook.get("session_id")
    return {
        "attention": attention,
        "reason": clean(reason or why, MAX_REASON),
        "sessionId": session if isinstance(session, str) and 0 < len(session) <= MAX_SESSION_ID else None,
        "event": event[:100],
    }


def write_notice(directory: Path, agent_id: str, tmux_session: str | None, notice: dict[str, Any]) -> Path:
    """Drop one notice into the daemon's folder, whole or not at all (rename)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"format": FORMAT, "agentId": agent_id, "tmuxSession": tmux_session,
              "at": int(time.time() * 1000), **notice}
    name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.json"
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    final = directory / name
    os.replace(tmp, final)
    return final


def read_notices(directory: Path, limit: int = MAX_NOTICES) -> list[dict[str, Any]]:
    """The oldest ``limit`` notices, in the order they were written; each is removed once read.

    A file that is not a notice (too big, not JSON) is removed with a warning:
    the folder is the agents' to write, so it is read with suspicion.
    """
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    for name in names[:limit]:
        path = directory / name
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_NOTICE_BYTES + 1)
            record = json.loads(raw) if len(raw) <= MAX_NOTICE_BYTES else None
        except (OSError, ValueError):
            record = None
        with contextlib.suppress(OSError):
            path.unlink()
        if not isinstance(record, dict) or not isinstance(record.get("agentId"), str):
            log.warning("ignored %s in the notify folder: not a notice", name)
            continue
        out.append(record)
    return out
