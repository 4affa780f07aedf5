"""Shared fixtures: a real relay process per test, and a client for it.

Also the order tests are handed to xdist workers in (ADR 0035, tests/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.client import Client
from tests.support.server import RelayProcess

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=2_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, slow tests first (ADR 0035).

    ``--dist loadfile --no-loadscope-reorder`` (pyproject's addopts) hands out whole
    files in the order their first test is collected; a minute-long test whose file
    starts last is a minute on the end of the run. The sort is stable, so a file's
    other tests keep their order, and a serial run (no ``workerinput``) keeps the
    file order untouched.
    """
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True, scope="session")
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``relay audit verify`` remembers what it proved under $XDG_STATE_HOME: keep tests' own."""
    old = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if old is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = old


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    """A fresh relay on its own data folder, stopped (SIGTERM) after the test."""
    proc = RelayProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(relay: RelayProcess) -> Iterator[Client]:
    c = Client(relay.url)
    try:
        yield c
    finally:
        c.close()
