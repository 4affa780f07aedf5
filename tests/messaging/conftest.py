"""One relay per module for the messaging tests: each test uses its own agent ids,
so they share a server (start-up is most of a small test's time)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

_ids = itertools.count()


@pytest.fixture(scope="module")
def shared_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    data: Path = tmp_path_factory.mktemp("messaging") / "data"
    proc = RelayProcess(data).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def api(shared_relay: RelayProcess) -> Iterator[Client]:
    c = Client(shared_relay.url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def uniq() -> str:
    """A prefix no other test in the module uses (ids, labels, tags)."""
    return f"t{next(_ids)}-"
