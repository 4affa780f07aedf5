"""Stored-event encoding: orjson, without the library's type envelopes.

The library's JSONTranscoder wraps every datetime in a ``{"_type_": ...,
"_data_": ...}`` envelope, which alone makes a heartbeat ~30 bytes bigger. Our
events hold only JSON types, except the library's own ``timestamp`` (and the
``_created_on``/``_modified_on`` of a snapshotted aggregate), which we store as
integer microseconds since the epoch and revive by key. See ADR 0001.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Transcoder

from relay.nesting import STORED_MAX_DEPTH, brackets, clip, depth

log = logging.getLogger(__name__)

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


_SEEN_TOO_DEEP: set[bytes] = set()


def _too_deep_seen(data: bytes) -> None:
    """Say once per stored event (per process) that it is shown clipped."""
    key = hashlib.sha256(data).digest()[:16]
    if key in _SEEN_TOO_DEEP or len(_SEEN_TOO_DEEP) >= 10_000:
        return
    _SEEN_TOO_DEEP.add(key)
    log.warning(
        "a stored event (%d bytes, sha256 %s…) nests deeper than %d levels (written before "
        "the limit); its deeper values are shown as a placeholder",
        len(data),
        key.hex()[:16],
        STORED_MAX_DEPTH,
    )


def _revive(state: dict[str, Any]) -> None:
    for key in _DATETIME_KEYS:
        value = state.get(key)
        if isinstance(value, int):
            state[key] = _EPOCH + timedelta(microseconds=value)


class UnstorableEventError(ValueError):
    """Raised when an event's state cannot be written as JSON that every reader can write back."""


class OrjsonTranscoder(Transcoder):
    """Encodes event state with orjson; revives the library's datetimes by key.

    Both directions keep the nesting limit (``relay.nesting``, ADR 0011):
    ``encode`` refuses an event nested deeper than ``STORED_MAX_DEPTH`` (the
    writer then fails that one command), and ``decode`` shows one written
    before the limit with its too-deep parts replaced by a placeholder, so a
    start-up, a stream, a page of the log or an export never meets a value
    orjson cannot write back.
    """

    def encode(self, obj: Any) -> bytes:
        try:
            data = orjson.dumps(obj, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except orjson.JSONEncodeError as e:
            raise UnstorableEventError(f"the event cannot be written as JSON: {e}") from None
        if brackets(data) > STORED_MAX_DEPTH and depth(obj, STORED_MAX_DEPTH) > STORED_MAX_DEPTH:
            raise UnstorableEventError(
                f"the event is nested deeper than {STORED_MAX_DEPTH} levels"
            )
        return data

    def decode(self, data: bytes) -> Any:
        state = orjson.loads(data)
        if brackets(data) > STORED_MAX_DEPTH:
            state, clipped = clip(state, STORED_MAX_DEPTH)
            if clipped:
                _too_deep_seen(data)
        if isinstance(state, dict):
            _revive(state)
            inner = state.get("state")
            if isinstance(inner, dict):  # a snapshot's aggregate state
                _revive(inner)
        return state
