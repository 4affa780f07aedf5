"""Resumes older than the ring: the past folded again from the store (ADR 0007).

The read models as of a position (``relay.audit.replay``) are folded forward
with the same ``ReadModels.apply`` the follower uses, so a past event carries
its entity *as of that event*, byte for byte what a live subscriber got then.
These functions block (they read the store): the hub runs them off the loop,
a few at a time.
"""

from __future__ import annotations

from relay.audit.log import READ_CHUNK
from relay.audit.replay import Replayer
from relay.http.sse.encoding import Frame, encode
from relay.http.sse.filter import Filter
from relay.projections.readmodels import ReadModels

CATCHUP_EVENTS = 2_000  # events folded per step of a replay from the store


def frames_at(replayer: Replayer, position: int) -> list[Frame]:
    """Every frame ``position`` produced, unfiltered ([] for a position with none)."""
    state = replayer.state_at(position - 1)
    batch = replayer.log.select(position - 1, 1, position)
    if not batch or batch[0].id != position:
        return []
    return encode(position, state.apply(position, replayer.log.decode(batch[0]), emit=True))


def fold_stretch(
    replayer: Replayer, rm: ReadModels | None, position: int, stop: int, flt: Filter
) -> tuple[ReadModels, bytes]:
    """Fold up to ``CATCHUP_EVENTS`` after ``position`` (at most to ``stop``), starting
    from ``rm`` (None: the state as of ``position``): the state reached and the bytes
    ``flt`` lets through."""
    state = rm if rm is not None else replayer.state_at(position)
    parts: list[bytes] = []
    decode = replayer.log.decode
    folded = 0
    while state.position < stop and folded < CATCHUP_EVENTS:
        batch = replayer.log.select(state.position, min(READ_CHUNK, CATCHUP_EVENTS), stop)
        if not batch:
            state.position = stop  # nothing stored up to the floor: all of it is behind us
            break
        for n in batch:
            changes = state.apply(n.id, decode(n), emit=True)
            if changes:
                payload = flt.select(encode(n.id, changes))
                if payload:
                    parts.append(payload)
        folded += len(batch)
    return state, b"".join(parts)
