"""PostgreSQL support is the ``postgres`` extra (issue 12).

Each CLI runs in a child process whose ``sitecustomize`` makes importing the
driver fail, as on a machine where only ``pip install -e .`` was run: ``relay
--help`` still lists ``migrate``, and asking for PostgreSQL says which extra to
install (exit 2, no traceback), while SQLite needs nothing more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

ROOT = Path(__file__).resolve().parents[2]
HINT = "pip install -e '.[postgres]'"

BLOCKER = '''
import importlib.abc
import sys


class _NoPostgresDriver(importlib.abc.MetaPathFinder):
    """As if psycopg had never been installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoPostgresDriver())
'''

DSN = "postgresql://postgres@127.0.0.1:1/nowhere"  # never reached: the driver is missing first


@pytest.fixture
def no_driver(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import psycopg`` fails."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    probe = subprocess.run([sys.executable, "-c", "import psycopg"], env=env, capture_output=True)
    assert probe.returncode != 0, "the blocker did not block psycopg"
    return env


def _relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _says_which_extra(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert HINT in r.stderr and "relay[postgres]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


def test_help_always_lists_migrate(no_driver: dict[str, str]) -> None:
    r = _relay(no_driver, "--help")
    assert r.returncode == 0, r.stderr
    assert "migrate" in r.stdout
    assert _relay(no_driver, "migrate", "--help").returncode == 0


def test_serve_on_postgres_without_the_driver_names_the_extra(
    no_driver: dict[str, str], tmp_path: Path
) -> None:
    r = _relay(no_driver, "serve", "--port", "0", "--data", str(tmp_path / "d"),
               "--store", "postgres", "--postgres-dsn", DSN)
    _says_which_extra(r)
    assert "relay listening" not in r.stdout


def test_migrate_without_the_driver_names_the_extra(no_driver: dict[str, str], tmp_path: Path) -> None:
    _says_which_extra(_relay(no_driver, "migrate", "--from", f"sqlite:{tmp_path}", "--to", f"postgres:{DSN}"))


def test_audit_on_postgres_without_the_driver_names_the_extra(
    no_driver: dict[str, str], tmp_path: Path
) -> None:
    _says_which_extra(_relay(no_driver, "audit", "--data", str(tmp_path), "--store", "postgres",
                             "--postgres-dsn", DSN, "verify"))


def test_sqlite_needs_no_driver(no_driver: dict[str, str], tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "d", ["--seal-every", "0"], env=no_driver, store="sqlite")
    with relay, closing(Client(relay.url)) as c:
        assert c.post("/api/agents", {"id": "a"}).status == 201


def test_the_extra_is_declared_and_documented() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("psycopg") for d in meta["postgres"])
    assert "relay[postgres]" in meta["test"]  # CI installs .[test] and runs the PostgreSQL suites
    for doc in ("README.md", "docs/deploy.md"):
        assert HINT in (ROOT / doc).read_text(), f"{doc} does not name the postgres extra"
