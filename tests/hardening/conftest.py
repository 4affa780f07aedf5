"""Fixtures for the hardening tests: relays with and without an admin token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

ADMIN_TOKEN = "admin-token-for-hardening-tests"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay with an admin token for the module (tests use distinct ids)."""
    proc = RelayProcess(
        tmp_path_factory.mktemp("secured") / "data",
        ["--token", ADMIN_TOKEN, "--stale-after", "3600"],
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def admin(secured: RelayProcess) -> Iterator[Client]:
    c = Client(secured.url, token=ADMIN_TOKEN)
    try:
        yield c
    finally:
        c.close()


def register(admin: Client, oid: str, **extra: object) -> str:
    """Register orchestrator ``oid`` (base dir /srv/<oid>) and return its token."""
    body = {"id": oid, "hostname": f"host-{oid}", "baseDir": f"/srv/{oid}", **extra}
    r = admin.post("/api/orchestrators", body)
    assert r.status == 201, r
    token = r.json["orchestratorToken"]
    assert isinstance(token, str) and len(token) >= 32
    return token


Connect = Callable[..., Client]


@pytest.fixture
def connect() -> Iterator[Callable[[str, str | None], Client]]:
    """Clients that present a given token (or none), closed after the test."""
    made: list[Client] = []

    def make(url: str, token: str | None = None) -> Client:
        made.append(Client(url, token=token))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            c.close()


def data_dir_of(proc: RelayProcess) -> Path:
    return proc.data_dir
