"""Who may call what: the admin token, orchestrator tokens, and stream limits.

One middleware decides, after routing and before any handler runs::

    the caller presents         is                      may call
    ------------------------    --------------------    -------------------------------------
    the admin token             "operator"              everything
    orchestrator X's token      "orchestrator:X"        X's heartbeat, agent report, agents'
                                                        attention, commands,
                                                        command results and ?orchestrator=X
                                                        stream; as agent orchestrator-X: send,
                                                        claim, ack, release, its inbox (the
                                                        handler checks the agent named);
                                                        POST /api/orchestrators for X itself
                                                        (the handler checks the id, the domain
                                                        keeps baseDir inside the admin's grant);
                                                        anything else is 403
    any other token             nobody                  nothing: 401
    no token                    "operator" when the relay has no admin token (it then listens
                                on loopback only, see Settings.checked); otherwise nobody: 401

``GET /api/health``, the dashboard page (``/``) and ``/static/*`` are open:
they hold no data. A presented token is always checked, even on a relay
without an admin token, so a host with a stale or foreign token learns it at
once instead of working by accident (docs/security.md).

The admin token is compared in constant time. Orchestrator tokens are never
stored; their SHA-256 is (in the log and in the read models), and a request's
token is hashed and looked up: timing can at most reveal a hash, which does not
lead back to the token.

The same middleware counts the event streams each client address holds open
(``GET /api/events`` handlers run as long as the stream does) and answers 429
with ``Retry-After`` past the limit, so the stream's own handler needs no
bookkeeping.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relay.config import Settings
from relay.http.errors import error_response
from relay.http.keys import PRINCIPAL, SERVICE
from relay.projections.queries import Queries

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPERATOR = "operator"
EVENTS_PATH = "/api/events"
TOKEN_HEADER = "X-Agent-Relay-Token"
OPEN_API_PATHS = frozenset({"/api/health"})
STREAM_RETRY_AFTER_S = 5

# (method, route template) an orchestrator token may call for its own {id}.
ORCHESTRATOR_ROUTES = frozenset(
    {
        ("POST", "/api/orchestrators/{id}/heartbeat"),
        ("PATCH", "/api/orchestrators/{id}/agents"),
        ("GET", "/api/orchestrators/{id}/commands"),
        ("HEAD", "/api/orchestrators/{id}/commands"),
        ("POST", "/api/orchestrators/{id}/commands/{commandId}/result"),
        ("POST", "/api/orchestrators/{id}/commands/{commandId}/progress"),
        ("POST", "/api/orchestrators/{id}/agents/{agentId}/attention"),
        ("POST", "/api/orchestrators/{id}/output"),
    }
)
# Streams a browser opens with EventSource, which cannot set headers: ?token= is read there.
QUERY_TOKEN_ROUTES = frozenset({("GET", "/api/orchestrators/{id}/agents/{agentId}/output")})

# Routes where an orchestrator token may act as itself with the id in the body: as
# its own agent (orchestrator-<id>; messaging.act_as checks the agent named), and
# re-registering itself (routes.register_orchestrator checks the id; the domain
# confines baseDir to what an admin granted, ADR 0013).
DELEGATED_ROUTES = frozenset(
    {
        ("POST", "/api/orchestrators"),
        ("POST", "/api/messages"),
        ("POST", "/api/messages/{id}/claim"),
        ("POST", "/api/messages/{id}/ack"),
        ("POST", "/api/messages/{id}/release"),
        ("GET", "/api/agents/{id}/inbox"),
        ("HEAD", "/api/agents/{id}/inbox"),
    }
)

_NEEDS_TOKEN = (
    "this relay needs a token: send 'Authorization: Bearer <token>' or "
    f"'{TOKEN_HEADER}: <token>'"
)
_WRONG_TOKEN = (
    "the token is not valid here (a wrong admin token, or an orchestrator token that was "
    "rotated or revoked by an admin, or replaced when the orchestrator was enrolled or "
    "registered again by an admin, or removed)"
)


def hash_token(token: str) -> str:
    """What the log and the read models keep of an orchestrator token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def principal(request: web.Request) -> str:
    """Who made the request, for ``requestedBy`` (the middleware has set it)."""
    return request.get(PRINCIPAL, OPERATOR)


def presented_token(request: web.Request) -> str | None:
    """The token a request carries: header first; the query only on the stream."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    value = request.headers.get(TOKEN_HEADER, "").strip()
    if value:
        return value
    if request.path == EVENTS_PATH and request.method in ("GET", "HEAD"):
        return request.query.get("token") or None
    if _route_of(request) in QUERY_TOKEN_ROUTES:
        return request.query.get("token") or None
    return None


def _own_orchestrator(request: web.Request) -> str | None:
    """The orchestrator id whose own resource this request addresses, if any."""
    if request.path == EVENTS_PATH:
        if request.method in ("GET", "HEAD"):
            return request.query.get("orchestrator") or None
        return None
    if _route_of(request) not in ORCHESTRATOR_ROUTES:
        return None
    return request.match_info.get("id")


def _route_of(request: web.Request) -> tuple[str, str] | None:
    """(method, route template) of the matched route; None when nothing matched."""
    resource = request.match_info.route.resource
    return None if resource is None else (request.method, resource.canonical)


def _unauthorized(message: str) -> web.Response:
    return error_response(401, message, {"WWW-Authenticate": 'Bearer realm="relay"'})


def authorize(request: web.Request, admin_token: bytes | None) -> str | web.Response:
    """The caller's principal, or the 401/403 response that refuses it."""
    token = presented_token(request)
    if token is None:
        if admin_token is None:
            return OPERATOR
        if request.query.get("token") is not None:
            return _unauthorized(
                "?token= is accepted only on GET /api/events and an agent's output stream; "
                "send the token in the Authorization header"
            )
        return _unauthorized(_NEEDS_TOKEN)
    raw = token.encode("utf-8", "surrogateescape")
    if admin_token is not None and hmac.compare_digest(raw, admin_token):
        return OPERATOR
    token_hash = hashlib.sha256(raw).hexdigest()
    q = Queries(request.app[SERVICE].rm)
    own = _own_orchestrator(request)
    if own is not None and hmac.compare_digest(token_hash, q.token_hash(own)):
        return f"orchestrator:{own}"
    holder = q.token_owner(token_hash)
    if holder is None:
        return _unauthorized(_WRONG_TOKEN)
    if _route_of(request) in DELEGATED_ROUTES:
        return f"orchestrator:{holder}"
    return error_response(
        403,
        f"this token belongs to orchestrator {holder!r}: it is valid only for that orchestrator's "
        "heartbeat, agent reports and attention, commands, command results, event stream "
        f"(?orchestrator={holder}) and its own re-registration; use the admin token for "
        "anything else",
    )


class StreamCounter:
    """Open event streams per client address (the stream handler lives as long as its stream)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        """Count one more stream for ``client``; False (nothing counted) when at the limit."""
        n = self.open.get(client, 0)
        if self.limit and n >= self.limit:
            return False
        self.open[client] = n + 1
        return True

    def release(self, client: str) -> None:
        n = self.open.get(client, 0) - 1
        if n > 0:
            self.open[client] = n
        else:
            self.open.pop(client, None)


def auth_middleware(settings: Settings) -> Any:
    """The middleware for ``settings``: token checks on /api/*, stream limits on /api/events."""
    admin_token = settings.token.encode("utf-8", "surrogateescape") if settings.token else None
    streams = StreamCounter(settings.max_streams_per_client)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/api/") or path in OPEN_API_PATHS:
            return await handler(request)
        who = authorize(request, admin_token)
        if isinstance(who, web.Response):
            return who
        request[PRINCIPAL] = who
        if path != EVENTS_PATH or request.method not in ("GET", "HEAD"):
            return await handler(request)
        client = request.remote or "unknown"
        if not streams.acquire(client):
            return error_response(
                429,
                f"too many open event streams from {client} (limit {streams.limit}, "
                "--max-streams-per-client); close one or retry later",
                {"Retry-After": str(STREAM_RETRY_AFTER_S)},
            )
        try:
            return await handler(request)
        finally:
            streams.release(client)

    return middleware
