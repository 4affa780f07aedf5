"""One middleware turns every failure into the contract's ``{"error": ...}``.

Handlers raise RelayError subclasses (or aiohttp's HTTP exceptions for routing
and body size); this is the only place that chooses status codes. Anything
unexpected is logged and answered 500 without details: a client must never be
able to cause one, and the tests check that they cannot.

Two kinds of failure never reach a middleware, and are answered here too:

- a request aiohttp cannot parse (a request line or header over its limits,
  bad framing): aiohttp answers those from its connection handler before any
  application code runs, as ``text/plain`` with a traceback in the log.
  ``JsonErrorProtocol`` answers them 414/431/400 JSON and logs one line.
- a 405's ``Allow`` header: aiohttp builds it from whichever routes match the
  path (``/api/agents/{id}`` also matches ``/api/agents/spawn``); we take it
  from the served OpenAPI document, so the header and the document agree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

from relay.domain.errors import RelayError
from relay.http.keys import ALLOWED_METHODS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# On every answer, including the ones aiohttp's connection handler makes (no hook runs there).
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The contract's error shape."""
    return web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
        headers={**NOSNIFF, **(headers or {})},
    )


_HTTP_MESSAGES = {
    404: "no such endpoint: {path}",
    405: "method {method} is not allowed on {path}",
}


def allowed_methods(document: Mapping[str, Any]) -> dict[str, str]:
    """Path template → ``Allow`` value, read from the OpenAPI document (the one source)."""
    return {
        path: ", ".join(m.upper() for m in _HTTP_METHODS if m in ops)
        for path, ops in document.get("paths", {}).items()
    }


async def _allow_header(request: web.Request, e: web.HTTPException) -> str:
    """What a 405 on this path names: the document's methods for the path template it matched.

    A literal path (``/api/agents/spawn``) wins over a template that also
    matches it (``/api/agents/{id}``), as a reader of the document would read
    it. A route the document does not describe (the dashboard page) keeps
    aiohttp's list from the route table.
    """
    table = request.app.get(ALLOWED_METHODS, {})
    if request.path in table:
        return table[request.path]
    for resource in request.app.router.resources():
        _, methods = await resource.resolve(request)
        if methods and resource.canonical in table:
            return table[resource.canonical]
    return e.headers.get("Allow", "")


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
        if e.status == 405:
            headers["Allow"] = await _allow_header(request, e)
        return error_response(e.status, message, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; the relay logged the details")


# A request line is "METHOD target ...": a method is a token, and a header name cannot hold a space.
_REQUEST_LINE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+ ")


def parse_error(exc: HttpProcessingError) -> tuple[int, str]:
    """Status and message for a request aiohttp could not parse.

    aiohttp raises ``LineTooLong`` for both the request line and a header, so
    which one it was is read from what it quotes: its C parser quotes the
    request target from a ``bytearray`` buffer (headers come as ``bytes``),
    its pure-Python parser quotes the whole line ("GET /… HTTP/1.1").
    """
    if isinstance(exc, LineTooLong):
        fragment, limit = exc.args[0], exc.args[1]
        if isinstance(fragment, bytearray) or _REQUEST_LINE.match(bytes(fragment)):
            return 414, f"the request line is over the limit of {limit} bytes"
        return 431, f"a request header is over the limit of {limit} bytes"
    if "too many headers" in str(exc.message).lower():
        return 431, "the request has too many headers"
    return 400, f"malformed HTTP request: {exc.message}"


class JsonErrorProtocol(web.RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse in the contract's shape."""

    __slots__ = ()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Called by aiohttp for unparseable requests and for errors outside the app's middlewares."""
        if isinstance(exc, HttpProcessingError):
            status, text = parse_error(exc)
            # Non-HTTP bytes on the port are everyday noise; aiohttp keeps them at debug too.
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
            log.log(level, "refused a request from %s: %s (%d)", request.remote, text, status)
        else:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            status, text = 500, "internal error; the relay logged the details"
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; cannot send an error instead")
        response = error_response(status, text)
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """A ``web.Server`` whose connections are ``JsonErrorProtocol``s."""

    def __call__(self) -> web.RequestHandler:
        return JsonErrorProtocol(self, loop=self._loop, **self._kwargs)


class RelayRunner(web.AppRunner):
    """``web.AppRunner`` with JSON answers for requests aiohttp rejects before routing.

    aiohttp offers no public hook for these: the runner builds the server, the
    server builds one connection handler per connection, and the handler's
    ``handle_error`` writes the answer. So the server is rebuilt with the same
    arguments around our handler class.
    """

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return JsonErrorServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
