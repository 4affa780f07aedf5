"""Checkpoints a third party can hold: the C2SP ``tlog-checkpoint`` text of the epoch tree.

The note text is three lines (c2sp.org/tlog-checkpoint)::

    relay-log/5d2c9a31f0e4b7a8c1d2e3f405162738      origin: names this log
    12                                              tree size: sealed epochs
    XcnaeacGWamtVZy3Ad7Zoqudgjqtl0lgz+Nw7/RgQyg=    base64 RFC 9162 root

followed by a blank line (where a signed note's signature lines would go;
relay holds no signing key, so the checkpoint is unsigned and a holder
keeps it somewhere the relay's host cannot write). The tree's leaves are
the sealed epochs (relay.audit.epochs.epoch_leaf), so its size counts
epochs, not events; ADR 0021 says why.

The origin defaults to ``relay-log/`` and the first 32 hex digits of epoch
1's root: epoch 1 never changes and covers the log's first events (ids,
times), so two logs do not share it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from relay.audit.epochs import EpochInfo, tree_head
from relay.audit.verify import TreeHead

ORIGIN_PREFIX = "relay-log/"
MAX_CHECKPOINT = 4096  # bytes: a checkpoint is a few lines


def default_origin(epochs: Sequence[EpochInfo]) -> str:
    if not epochs:
        raise ValueError("no epoch is sealed yet, so the log has no checkpoint")
    return ORIGIN_PREFIX + epochs[0].root[:32]


def render(epochs: Sequence[EpochInfo], origin: str | None = None) -> str:
    """The checkpoint text for ``epochs`` (origin, size, base64 root, blank line)."""
    origin = origin or default_origin(epochs)
    _check_origin(origin)
    size, root = tree_head(epochs)
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n\n"


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() for c in origin) or "+" in origin or not origin.isprintable():
        raise ValueError(f"the origin {origin!r} must be non-empty printable text without spaces or '+'")


def parse(text: str) -> TreeHead:
    """A checkpoint's tree head; raises ValueError naming what is wrong.

    Extension lines after the root are allowed (and ignored) and anything after
    the first blank line (signature lines) is ignored, as the spec says.
    """
    if len(text) > MAX_CHECKPOINT:
        raise ValueError(f"a checkpoint is a few lines, not {len(text)} bytes")
    body = text.split("\n\n", 1)[0]
    lines = body.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 3 or "" in lines:
        raise ValueError("a checkpoint has an origin, a tree size and a root hash, one per line")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    _check_origin(origin)
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise ValueError(f"the tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"the root hash {root_text!r} is not base64") from None
    if len(root) != 32:
        raise ValueError("the root hash is not 32 bytes")
    return TreeHead(origin=origin, size=int(size_text), root=root)
