"""The process environment is read in the config modules only (issue 13).

``relay/config.py`` (the server, ``relay audit``, ``relay token``) and
``relay/host/config.py`` (the host daemon) each read it once through their
``environment()``; everything else is handed a mapping. A second reader is how
defaults came to be repeated (``relay audit`` once spelled out ``./relay-data``
and ``sqlite`` again), so this scans every module's syntax tree for a read of
``os.environ`` / ``os.getenv`` (and their bytes and write twins) anywhere else.
An import-linter contract cannot say this: the modules need ``os`` for files.
"""

from __future__ import annotations

import ast

import pytest

from tests.support.sourcescan import ROOT, offending_lines

PACKAGE = ROOT / "relay"

# The modules that may read the environment, and why.
ALLOWED = {
    "relay/config.py": "the server side's settings",
    "relay/host/config.py": "the host daemon's settings",
    # Run by tmux as ``python -I launch.py SPEC`` in the agent's pane: a separate
    # process, standard library only, that passes the pane's own TERM/TMUX on.
    "relay/host/launch.py": "the pane shim, its own process",
}
NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def readers(source: str) -> list[int]:
    """Line numbers where ``source`` reaches the process environment."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in ("os", "posix", "nt")
        ) or (
            isinstance(node, ast.ImportFrom)
            and node.module in ("os", "posix", "nt")
            and any(alias.name in NAMES for alias in node.names)
        ):
            lines.append(node.lineno)
    return sorted(lines)


def test_only_the_config_modules_read_the_environment() -> None:
    found = offending_lines(PACKAGE, ALLOWED, readers)
    assert found == {}, (
        "read the environment in relay/config.py (relay/host/config.py for the host) and pass "
        f"the mapping down; found in {found}"
    )


def test_the_allowed_modules_exist_and_do_read_it() -> None:
    """An entry left behind after a move would allow nothing and hide nothing: refuse it."""
    for name in ALLOWED:
        assert readers((ROOT / name).read_text(encoding="utf-8")), name


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.environ.get('RELAY_DATA')\n",
        "import os\nx = os.getenv('RELAY_DATA')\n",
        "from os import environ\n",
        "from os import getenv as g\n",
        "import os\nos.environ.pop('RELAY_TOKEN', None)\n",
        "import os\ndef f():\n    return dict(os.environ)\n",
    ],
)
def test_the_scan_sees_each_way_of_reading(source: str) -> None:
    assert readers(source)


def test_the_scan_leaves_other_uses_of_os_alone() -> None:
    assert readers("import os\nos.replace('a', 'b')\nenv = {'environ': 1}\n") == []
