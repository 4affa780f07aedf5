"""Frames: a position's changes as SSE bytes, encoded once for every subscriber.

Ids are unique and increase (ADR 0007, amended): the position's last frame is
``P``, earlier ones ``P.K`` with K the frame's index among all of the
position's frames, so a filter changes which frames a client sees, never their
ids; ``parse_event_id`` reads such an id back.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

import orjson

from relay.domain.errors import InvalidInputError
from relay.http.sse.names import NAMES, Scope
from relay.projections.fold import Change
from relay.projections.readmodels import ReadModels

log = logging.getLogger("relay.http.sse")

RETRY_MS = 1_000
KEEPALIVE = b": keep-alive\n\n"


class Frame(NamedTuple):
    """One change's wire bytes, tagged with what filters look at."""

    family: str
    orchestrator: str | None  # the orchestrator it is about (orchestrator.* only)
    agents: tuple[str, ...]  # the agents it concerns (agent.*: itself; message.*: both ends)
    data: bytes


def encode(position: int, changes: list[Change]) -> list[Frame]:
    """Each change as its SSE bytes, tagged for filtering; the data is encoded now,
    because the dicts are the live read models and will change under us."""
    frames: list[Frame] = []
    last = len(changes) - 1
    for k, (kind, data) in enumerate(changes):
        name, family, scope, wire_name = _TABLE[kind]
        oid: str | None = None
        agents: tuple[str, ...] = ()
        if scope is _ORCHESTRATOR:
            oid = data.get("id")
        elif scope is _OWNER:
            oid = data.get("orchestratorId")
        elif scope is _AGENT:
            agents = (data["id"],)
        elif scope is _ENDS:
            agents = tuple(a for a in (data.get("recipient"), data.get("from")) if a)
        head = b"id: %d" % position if k == last else b"id: %d.%d" % (position, k)
        wire = head + wire_name + _data_bytes(name, data) + b"\n\n"
        frames.append(Frame(family, oid, agents, wire))
    return frames


# The hot path's view of NAMES: a tuple indexed by the kind (an int), and the scopes
# as module globals (an Enum member looked up on its class costs more, per frame).
_TABLE = tuple(NAMES[kind] for kind in sorted(NAMES))
assert all(i == kind for i, kind in enumerate(sorted(NAMES))), "Changed must count from 0"
_ORCHESTRATOR, _OWNER, _AGENT, _ENDS = Scope.ORCHESTRATOR, Scope.OWNER, Scope.AGENT, Scope.ENDS


def _data_bytes(name: str, data: dict[str, Any]) -> bytes:
    """``data`` as JSON; a record orjson cannot write (ADR 0011) becomes a placeholder
    naming it, so the position still reaches every stream instead of being skipped."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as e:
        log.warning("an SSE frame (%s) cannot be encoded (%s); sent as a placeholder", name, e)
        return orjson.dumps({"id": str(data.get("id")), "error": f"cannot be shown as JSON: {e}"})


def chunk(payload: bytes) -> bytes:
    """``payload`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def state_blob(rm: ReadModels) -> bytes | None:
    """The read models as a replay anchor, or None (logged) when they cannot be encoded:
    a missing anchor only makes a replay fold from an earlier one, never stops the relay."""
    try:
        return orjson.dumps(rm.to_state())
    except orjson.JSONEncodeError:
        log.warning("the read models cannot be encoded; skipping this replay anchor", exc_info=True)
        return None


_EVENT_ID = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,9}))?", re.ASCII)


def parse_event_id(raw: str, field: str) -> tuple[int, int | None]:
    """An event id as the relay writes it: ``P`` (all of position P delivered) or
    ``P.K`` (P's frames up to its K-th delivered)."""
    m = _EVENT_ID.fullmatch(raw.strip())
    if m is None:
        raise InvalidInputError(
            field,
            f"must be an event id this relay sent (a log position P, or P.K), not {raw[:40]!r}",
        )
    return int(m[1]), (int(m[2]) if m[2] is not None else None)
