"""Stored-event encoding: orjson, without the library's type envelopes.

The library's JSONTranscoder wraps every datetime in a ``{"_type_": ...,
"_data_": ...}`` envelope, which alone makes a heartbeat ~30 bytes bigger. Our
events hold only JSON types, except the library's own ``timestamp`` (and the
``_created_on``/``_modified_on`` of a snapshotted aggregate), which we store as
integer microseconds since the epoch and revive by key. See ADR 0001.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATETIME_KEYS = ("timestamp", "_created_on", "_modified_on")


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        delta = obj - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(obj, UUID):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in an event")


def _revive(state: dict[str, Any]) -> None:
    for key in _DATETIME_KEYS:
        value = state.get(key)
        if isinstance(value, int):
            state[key] = _EPOCH + timedelta(microseconds=value)


class OrjsonTranscoder(Transcoder):
    """Encodes event state with orjson; revives the library's datetimes by key."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        if isinstance(state, dict):
            _revive(state)
            inner = state.get("state")
            if isinstance(inner, dict):  # a snapshot's aggregate state
                _revive(inner)
        return state
