"""Fixtures for tests against a real PostgreSQL: a fresh schema per test, and nodes on it.

Every test here skips with a reason when ``RELAY_TEST_POSTGRES_DSN`` is unset;
CI sets it, so there they are mandatory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.postgres import drop_schema, new_schema, require_dsn
from tests.support.server import RelayProcess


@pytest.fixture
def pg_dsn() -> str:
    """The test server (skips the test when none is configured)."""
    return require_dsn()


@pytest.fixture
def log_dsn(pg_dsn: str) -> Iterator[str]:
    """A DSN narrowed to a fresh, empty schema: one relay log, dropped after the test."""
    schema, dsn = new_schema(pg_dsn)
    try:
        yield dsn
    finally:
        drop_schema(schema, pg_dsn)


NodeFactory = Callable[..., RelayProcess]
Connect = Callable[[str], Client]


@pytest.fixture
def node(tmp_path: Path, log_dsn: str) -> Iterator[NodeFactory]:
    """Start relay nodes on the test's log: ``node("a")``, ``node("b", extra_args=[...])``.

    Each node has its own data folder (its read-model checkpoint) and shares
    the log. All are stopped after the test (killed if SIGTERM does not do).
    """
    started: list[RelayProcess] = []

    def start(
        name: str, extra_args: tuple[str, ...] | list[str] = (), dsn: str | None = None
    ) -> RelayProcess:
        proc = RelayProcess(
            tmp_path / name, list(extra_args), store="postgres", postgres_dsn=dsn or log_dsn
        )
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[str], Client]]:
    """``connect(url)``: a Client closed after the test."""
    made: list[Client] = []

    def make(url: str) -> Client:
        c = Client(url)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
