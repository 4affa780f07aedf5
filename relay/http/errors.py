"""One middleware turns every failure into the contract's ``{"error": ...}``.

Handlers raise RelayError subclasses (or aiohttp's HTTP exceptions for routing
and body size); this is the only place that chooses status codes. Anything
unexpected is logged and answered 500 without details: a client must never be
able to cause one, and the tests check that they cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from relay.domain.errors import RelayError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The contract's error shape."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


_HTTP_MESSAGES = {
    404: "no such endpoint: {path}",
    405: "method {method} is not allowed on {path}",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RelayError as e:
        return error_response(e.status, e.message)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size
        return error_response(413, f"request body is over the limit of {limit} bytes")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        template = _HTTP_MESSAGES.get(e.status)
        if template:
            message = template.format(method=request.method, path=request.path)
        else:
            message = e.text or e.reason
        headers = {}
        if e.status == 405 and "Allow" in e.headers:
            headers["Allow"] = e.headers["Allow"]
        return error_response(e.status, message, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; the relay logged the details")
