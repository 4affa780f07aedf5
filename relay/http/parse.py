"""The border between outside data and our types: read the body, decode it into its shape.

What a body, a query or a response may hold is declared once, in
relay.wire.shapes (ADR 0029); here we only get the bytes off the request (415
for other content types, 408 for a stalled sender, 413 past the limit) and
hand them to the shape's decoder, which names the field it refuses.
Existence is the application's business and rules are the domain's.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from aiohttp import web

from relay.domain.errors import InvalidInputError, RelayError
from relay.http.keys import SETTINGS
from relay.wire.declare import Shape, decode, from_query

S = TypeVar("S", bound=Shape)


class UnsupportedMediaError(RelayError):
    """Raised when a body is sent with a content type other than JSON."""

    status = 415


class BodyTimeoutError(RelayError):
    """Raised when a client does not finish sending its body in time (a slow or stalled sender)."""

    status = 408


async def read_body(request: web.Request) -> bytes:
    """The request's body bytes; 415 when it is not JSON, 408 when it does not arrive in time."""
    if request.content.is_eof():
        # The whole body is already here (the usual case: it came with the
        # headers), so nothing can stall: skip the timer, ~5% of a heartbeat's
        # time on the loop (docs/benchmarks.md).
        raw = await request.read()  # raises 413 past client_max_size
    else:
        timeout = request.app[SETTINGS].client_timeout
        try:
            async with asyncio.timeout(timeout):
                raw = await request.read()
        except TimeoutError:
            raise BodyTimeoutError(
                f"the request body did not arrive within {timeout:g} s; send it whole and promptly"
            ) from None
    if raw:
        ctype = request.content_type
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise UnsupportedMediaError(
                f"the body must be JSON (Content-Type: application/json), not {ctype or 'untyped'}"
            )
    return raw


async def body(request: web.Request, shape: type[S], required: bool = True) -> S:
    """The request's JSON body as ``shape``; an absent optional body is the shape's defaults."""
    raw = await read_body(request)
    if not raw:
        if required:
            raise InvalidInputError("body", "a JSON object is required")
        return decode(b"{}", shape)
    return decode(raw, shape)


def query(request: web.Request, shape: type[S]) -> S:
    """The request's query parameters as ``shape``; each at most once, unknown ones ignored."""
    q = request.query
    return from_query({k: q.getall(k) for k in q}, shape)
