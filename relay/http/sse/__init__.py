"""``GET /api/events``: the log's tail as Server-Sent Events, encoded once, fanned out.

One concept a module (issue 13):

- ``names``: what each read-model change is called on the wire, its family
  and what it concerns (the only place SSE names are chosen);
- ``encoding``: a position's changes as frames (``id: P`` / ``P.K``), chunks,
  event ids read back;
- ``filter``: what one subscriber asked for (``?types=``, ``?orchestrator=``,
  ``?agent=``);
- ``subscriber``: one open stream, whose transport is its bounded buffer;
- ``ring``: recent positions kept encoded, for resumes without the store;
- ``replay``: resumes older than the ring, folded again from the store;
- ``keepalive``: comments, and noticing clients that left;
- ``hub``: the fan-out, membership and the seamless switch from past to live;
- ``handler``: the route, its parsing, and the hub's lifetime in the app.

Each position's frames travel in one write: a stream the relay ends is ended
between positions, never inside one (a position can carry two events: an
orchestrator and its own agent record). A client can still stop reading
between them, so every frame has its own id: ``P`` for a position's last,
``P.K`` for the earlier ones (K counted over all of P's frames, so a filter
never changes an id), and ``Last-Event-ID: P.K`` resumes with the frame after
it (ADR 0007).

The names below are the package's public surface; import them from here.
"""

from __future__ import annotations

from relay.http.sse.encoding import KEEPALIVE, RETRY_MS, Frame, chunk, encode, parse_event_id, state_blob
from relay.http.sse.filter import Filter
from relay.http.sse.handler import parse_stream, setup, stream
from relay.http.sse.hub import EventHub
from relay.http.sse.names import FAMILIES, NAMES
from relay.http.sse.subscriber import Subscriber

__all__ = [
    "FAMILIES",
    "KEEPALIVE",
    "NAMES",
    "RETRY_MS",
    "EventHub",
    "Filter",
    "Frame",
    "Subscriber",
    "chunk",
    "encode",
    "parse_event_id",
    "parse_stream",
    "setup",
    "state_blob",
    "stream",
]
