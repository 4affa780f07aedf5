"""What ``relay audit export --after`` and ``relay audit history`` print (issue 12).

A partial export names every event's entity as the full export does (an entity
created before ``--after`` included); a spawn in a history reads as a command
added, never ``commands {} → null``; history lines stay short and printable.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import orjson

from relay.application import RelayApp
from relay.audit.cli import export_lines
from relay.audit.log import AppLog
from relay.config import Settings
from relay.store import store_env
from tests.audit.conftest import Audit

LINE_WIDTH = 120  # relay.audit.cli.LINE_WIDTH: history lines wrap past it


def _lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def test_export_after_names_entities_as_the_full_export_does(sealed_log: Path, audit: Audit) -> None:
    full = _lines(audit(sealed_log, "export", check=True).stdout)
    assert all(e["entityId"] is not None for e in full if not e["type"].startswith("Log"))
    for after in (7, len(full) - 3):
        part = _lines(audit(sealed_log, "export", "--after", str(after), check=True).stdout)
        assert part == full[after:], f"--after {after}"
        # Not vacuous: later events of entities created before the cut are in it, named.
        assert any(
            e["originatorVersion"] > 1 and e["entityId"] is not None and not e["type"].startswith("Log")
            for e in part
        )


def test_export_after_names_entities_through_the_library_too(sealed_log: Path, tmp_path: Path) -> None:
    """The same through ``AppLog`` (the path ``--store postgres`` takes), on a copy."""
    copy = tmp_path / "copy"
    shutil.copytree(sealed_log, copy)
    app = RelayApp(store_env(Settings(data_dir=copy)))
    try:
        log = AppLog(app)
        full, part = io.BytesIO(), io.BytesIO()
        export_lines(log, full)
        export_lines(log, part, after=10)
    finally:
        app.close()
    assert _lines(part.getvalue().decode()) == _lines(full.getvalue().decode())[10:]


def test_history_shows_a_spawn_as_a_command_added(sealed_log: Path, audit: Audit) -> None:
    text = audit(sealed_log, "history", "o1", check=True).stdout
    assert "→ null" not in text and "{} →" not in text, text
    spawn = next(line for line in text.splitlines() if "SpawnRequested" in line)
    assert "added: kind=spawn" in spawn, text
    result = text[text.index("CommandResultRecorded") :]
    assert "status pending → done" in result
    for line in text.splitlines():
        assert len(line) <= LINE_WIDTH, line
    rows = _lines(audit(sealed_log, "history", "o1", "--json", check=True).stdout)
    changes = next(r["changes"] for r in rows if r["type"] == "SpawnRequested")
    assert "commands" not in changes
    ((key, (old, new)),) = changes.items()
    assert key.startswith("commands.") and old is None and new["kind"] == "spawn"


def test_history_values_are_short_and_printable() -> None:
    from relay.audit.cli import _fmt_value

    assert _fmt_value("label", "evil\x1b[2Jname") == '"evil\\u001b[2Jname"'
    assert _fmt_value("label", "two\nlines") == '"two\\nlines"'
    long = _fmt_value("prompt", "x" * 500)
    assert len(long) <= 72 and long.endswith("…")
    agents = [{"agentId": "m1", "provider": "claude"}, {"agentId": "m2", "provider": "codex"}]
    assert _fmt_value("managedAgents", agents) == "[m1, m2]"
