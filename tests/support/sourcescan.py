"""One walk over relay's own sources for the tests that forbid a pattern outside its home.

Several rules are checked by scanning the package (only config reads the environment,
handlers ask queries, one module names the orchestrator-agent prefix): each test gives
the folder, the files allowed to break the rule, and what finds the offending lines.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def offending_lines(
    folder: Path, allowed: Collection[str], find: Callable[[str], list[int]]
) -> dict[str, list[int]]:
    """``{path relative to the repository: line numbers}`` for each file ``find`` flags."""
    found: dict[str, list[int]] = {}
    for path in sorted(folder.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in allowed:
            continue
        lines = find(path.read_text(encoding="utf-8"))
        if lines:
            found[name] = lines
    return found
