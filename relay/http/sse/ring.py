"""The ring: recent positions kept as their encoded frames, for resumes without the store.

Every position in ``(floor, newest]`` that produced frames is in it, oldest
first. It is bounded by positions (``--sse-ring``) and by bytes, but never
drops a position that has not been delivered yet: a resume hands over only
up to what has been delivered, and the live set takes it from there.
"""

from __future__ import annotations

import bisect

from relay.http.sse.encoding import Frame
from relay.http.sse.filter import Filter

RING_BYTES = 32 * 1024 * 1024


class Ring:
    """Positions and their frames, appended in log order, trimmed from the old end."""

    __slots__ = ("_bytes", "_frames", "_pos", "_start", "floor", "max_bytes", "max_positions")

    def __init__(self, max_positions: int, floor: int = 0, max_bytes: int = RING_BYTES) -> None:
        self.max_positions = max_positions
        self.max_bytes = max_bytes
        self._pos: list[int] = []
        self._frames: list[list[Frame]] = []
        self._start = 0  # index of the oldest kept position (trimmed lazily, in bulk)
        self._bytes = 0
        self.floor = floor  # every position after it with frames is here

    def remember(self, position: int, frames: list[Frame], delivered: int) -> None:
        """Keep ``position``'s frames; drop the oldest beyond the bounds, never past ``delivered``."""
        self._pos.append(position)
        self._frames.append(frames)
        self._bytes += sum(len(f.data) for f in frames)
        while (
            (len(self._pos) - self._start > self.max_positions or self._bytes > self.max_bytes)
            and len(self._pos) - self._start > 1
            and self._pos[self._start] <= delivered  # never what is still pending
        ):
            i = self._start
            self.floor = self._pos[i]
            self._bytes -= sum(len(f.data) for f in self._frames[i])
            self._frames[i] = []
            self._start += 1
        if self._start > 4096 and self._start * 2 > len(self._pos):
            del self._pos[: self._start]
            del self._frames[: self._start]
            self._start = 0

    def after(
        self, position: int, flt: Filter, budget: int, delivered: int
    ) -> tuple[bytes, int, bool]:
        """Frames after ``position`` for ``flt``, up to ``delivered``: (bytes up to
        ``budget``, last position included, whether that reached ``delivered``)."""
        i = bisect.bisect_right(self._pos, position, lo=self._start)
        parts: list[bytes] = []
        size = 0
        last = position
        n = bisect.bisect_right(self._pos, delivered, lo=i)
        while i < n:
            payload = flt.select(self._frames[i])
            if payload:
                if parts and size + len(payload) > budget:
                    return b"".join(parts), last, False
                parts.append(payload)
                size += len(payload)
            last = self._pos[i]
            i += 1
        return b"".join(parts), delivered, True

    def at(self, position: int) -> list[Frame]:
        """Every frame of ``position`` (after the floor), unfiltered; [] if it had none."""
        i = bisect.bisect_left(self._pos, position, lo=self._start)
        found = i < len(self._pos) and self._pos[i] == position
        return list(self._frames[i]) if found else []
