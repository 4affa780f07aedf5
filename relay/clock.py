"""Time as data: the one place that reads the wall clock.

The domain never reads it; handlers read it once per request (the server's
receive time) and pass it in, so replay never depends on when it runs.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Gives the current time in epoch milliseconds."""

    def now_ms(self) -> int: ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    """A clock tests move by hand, so no test ever sleeps to make time pass."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms

    def now_ms(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now
