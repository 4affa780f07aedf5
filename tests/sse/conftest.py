"""Relays started with the options each stream test needs, stopped after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sse.support import SseStream
from tests.support.client import Client
from tests.support.server import RelayProcess

Start = Callable[..., RelayProcess]
Connect = Callable[[RelayProcess], Client]
Open = Callable[..., SseStream]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(*args, env=..., data=...)``: a relay on its own (or the given) data folder."""
    started: list[RelayProcess] = []

    def _start(*args: str, env: dict[str, str] | None = None, data: Path | None = None) -> RelayProcess:
        proc = RelayProcess(data or tmp_path / f"data{len(started)}", list(args), env=env).start()
        started.append(proc)
        return proc

    try:
        yield _start
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[RelayProcess], Client]]:
    """``connect(relay)``: an HTTP client, closed after the test."""
    clients: list[Client] = []

    def _connect(relay: RelayProcess) -> Client:
        clients.append(Client(relay.url))
        return clients[-1]

    try:
        yield _connect
    finally:
        for c in clients:
            c.close()


@pytest.fixture
def sse() -> Iterator[Callable[..., SseStream]]:
    """``sse(relay, query, headers, rcvbuf=...)``: an event stream, closed after the test."""
    streams: list[SseStream] = []

    def _open(relay: RelayProcess, *args: Any, **kw: Any) -> SseStream:
        streams.append(SseStream(relay.url, *args, **kw))
        return streams[-1]

    try:
        yield _open
    finally:
        for s in streams:
            s.close()
