"""One open stream: its transport is its bounded buffer (ADR 0007).

Nothing is queued per subscriber: a position is written to the transport at
once, or, when that would take the transport's write buffer past the stream's
limit, the stream is ended ("overflow") and the client resumes from its last id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from relay.http.sse.filter import Filter


class Subscriber:
    """One open stream: its transport, its filter and why it ended (if it has)."""

    __slots__ = ("chunked", "done", "filter", "limit", "reason", "transport")

    def __init__(self, transport: Any, flt: Filter, limit: int, chunked: bool) -> None:
        self.transport = transport
        self.filter = flt
        self.limit = limit
        self.chunked = chunked
        self.reason: str | None = None
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def push(self, payload: bytes, framed: bytes) -> None:
        """Write one whole position (or a comment) now, or end the stream if it cannot keep up."""
        if self.reason is not None:
            return
        t = self.transport
        if t is None or t.is_closing():
            self.finish("gone")
            return
        data = framed if self.chunked else payload
        if t.get_write_buffer_size() + len(data) > self.limit:
            self.finish("overflow")
            return
        t.write(data)

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes stay within this stream's buffer."""
        t = self.transport
        return t is not None and t.get_write_buffer_size() + size <= self.limit

    def finish(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if not self.done.done():
                self.done.set_result(reason)
