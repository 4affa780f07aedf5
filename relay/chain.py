"""The rolling hash over the log: what a seal records and what ``verify`` recomputes.

Each stored event contributes its position, aggregate id, version, topic and
stored bytes, exactly as they sit in the store::

    link(e) = position (8 bytes, big-endian) | originator id (16) | version (8) | topic | 0x00 | state
    h(0)    = 32 zero bytes
    h(n)    = sha256(h(n-1) | link(e_n))        over every event in log order, seals included

Because every value depends on all earlier ones, a seal that records ``h`` at
position ``p`` commits to the whole log up to ``p``. A seal also records the
first four bytes of each ``h`` in its segment, so that ``verify`` can name
the first position whose bytes, place or neighbours changed instead of only
saying "something in these thousand events" (docs/audit.md).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any
from uuid import UUID

GENESIS = bytes(32)
DIGEST_BYTES = 4


def link(position: int, originator_id: UUID | str, version: int, topic: str, state: bytes) -> bytes:
    """The bytes one stored event contributes to the chain."""
    oid = originator_id.bytes if isinstance(originator_id, UUID) else UUID(originator_id).bytes
    return b"".join(
        (
            position.to_bytes(8, "big"),
            oid,
            version.to_bytes(8, "big", signed=True),
            topic.encode(),
            b"\x00",
            state,
        )
    )


def step(previous: bytes, notification: Any) -> bytes:
    """The chain value after ``notification`` (a library Notification or the like)."""
    return hashlib.sha256(
        previous
        + link(
            notification.id,
            notification.originator_id,
            notification.originator_version,
            notification.topic,
            notification.state,
        )
    ).digest()


def fold(previous: bytes, notifications: Iterable[Any]) -> tuple[bytes, list[bytes]]:
    """The chain value after all of ``notifications`` and each intermediate value."""
    values: list[bytes] = []
    h = previous
    for n in notifications:
        h = step(h, n)
        values.append(h)
    return h, values


def pack_digests(values: Iterable[bytes]) -> str:
    """Short prefixes of chain values, for naming the first bad position later."""
    return base64.b64encode(b"".join(v[:DIGEST_BYTES] for v in values)).decode("ascii")


def unpack_digests(text: str) -> list[bytes]:
    """The inverse of ``pack_digests``; raises ValueError on a malformed string."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % DIGEST_BYTES:
        raise ValueError("digest list has a torn entry")
    return [raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)]
