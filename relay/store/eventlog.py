"""The log as its readers see it: a small protocol, and its plainest adapter.

The tail follower (relay/projections/follower.py) and the read-model rebuild
read the log only through ``ReadableLog``: positions after a given one, the
head, and decoding a stored notification to its domain event. In a running
relay that is the ``LogReader`` (relay/store/reader.py: the archive, then the
live store); ``RecorderLog`` adapts a bare application (tests, tools) over
the library's public recorder and mapper. Neither side imports
relay.application (ADR 0030).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from eventsourcing.persistence import Notification


@runtime_checkable
class ReadableLog(Protocol):
    """What a reader of the log needs: ``select`` after a position, ``head``, ``decode``."""

    def select(self, after: int, limit: int, stop: int | None = None) -> list[Notification]:
        """Up to ``limit`` notifications after position ``after`` (at most ``stop``), oldest first."""
        ...

    def head(self) -> int:
        """The newest position (0: an empty log)."""
        ...

    def decode(self, notification: Notification) -> Any:
        """The domain event stored at ``notification``."""
        ...


class RecorderLog:
    """A ``ReadableLog`` over an eventsourcing application's recorder (no archive)."""

    def __init__(self, app: Any) -> None:
        self.recorder = app.recorder
        self.mapper = app.mapper

    def select(self, after: int, limit: int, stop: int | None = None) -> list[Notification]:
        return list(
            self.recorder.select_notifications(start=after, limit=limit, stop=stop, inclusive_of_start=False)
        )

    def head(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    def decode(self, notification: Notification) -> Any:
        return self.mapper.to_domain_event(notification)


def readable(source: Any) -> ReadableLog:
    """``source`` as a ``ReadableLog``: itself if it is one, else an application's recorder."""
    if isinstance(source, ReadableLog):
        return source
    return RecorderLog(source)
