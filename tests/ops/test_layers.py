"""The import contracts of ADR 0028 (pyproject's ``[tool.importlinter]``), checked under pytest too.

CI runs ``lint-imports`` after ruff; this runs the same command, so a plain
``pytest`` also fails when a module imports across a layer, a cycle appears,
the domain reaches for IO or the host daemon for a server module.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_every_import_contract_is_kept() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Guard against a configuration that checks nothing (lint-imports passes with no contracts broken).
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", done.stdout)
    assert summary is not None, done.stdout
    assert int(summary[1]) >= 6 and summary[2] == "0", summary[0]
