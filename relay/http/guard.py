"""Requests a browser makes on a web page's behalf never reach the relay's handlers.

A relay without an admin token trusts every request that reaches its
loopback port. Two browser tricks reach it from an ordinary web page:

- **DNS rebinding**: ``evil.example`` resolves to 127.0.0.1 after the page
  loaded, so the page's requests go to the relay *same-origin* from the
  browser's point of view, carrying ``Host: evil.example``. Answered 421
  unless the ``Host`` is a loopback name or the configured ``--public-url``.
  Only checked without an admin token: with one, such a request has no token,
  and operators reach a token-protected relay by whatever names they like.
- **Cross-site requests**: a page's ``fetch``/form to ``http://127.0.0.1:4850``
  is sent (the browser only hides the answer). Answered 403 when the
  request's ``Origin`` is not the relay's own, or the browser says
  ``Sec-Fetch-Site: cross-site``/``same-site``. Checked with and without a
  token: the dashboard is same-origin, so nothing legitimate is lost.

What real clients send: curl, scripts and the host daemon (aiohttp's client)
send a ``Host`` naming the address they dialled and neither ``Origin`` nor
``Sec-Fetch-*``; the dashboard's requests are same-origin. A person
following a link to the dashboard from another site makes a cross-site
*navigation* (GET, ``Sec-Fetch-Mode: navigate``): allowed, it changes
nothing and the linking page cannot read the answer. See ADR 0015.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from relay.config import Settings
from relay.http.errors import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` value (``[::1]:80`` → ``::1``, ``Relay.Example.`` → ``relay.example``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name = host.rpartition(":")[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """``localhost``, ``*.localhost`` (browsers resolve it to loopback themselves) and loopback IPs."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-cased, as browsers write ``Origin``."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def cross_site_reason(request: web.Request, public_origin: str | None) -> str | None:
    """Why this request came from another site's page, or None when it did not."""
    if request.method in ("GET", "HEAD") and request.headers.get("Sec-Fetch-Mode") == "navigate":
        return None
    origin = request.headers.get("Origin")
    if origin is not None:
        own = urlsplit(origin.strip()).netloc.lower() == request.headers.get("Host", "").strip().lower()
        if not own and origin_of(origin) != public_origin:
            return f"Origin {origin[:200]!r} is not this relay's"
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in _FOREIGN_SITES:
        return f"the browser says the request is {site}"
    return None


def guard_middleware(settings: Settings) -> Any:
    """The middleware for ``settings``: Host checked without an admin token, cross-site always."""
    public = origin_of(settings.public_url) if settings.public_url else None
    public_name = (urlsplit(settings.public_url).hostname or "").lower() if settings.public_url else None
    check_host = not settings.token

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if check_host and host is not None:
            name = host_name(host)
            if not is_loopback_name(name) and name != public_name:
                return error_response(
                    421,
                    f"this relay does not answer to Host {host[:200]!r}: without --token it answers "
                    "only loopback names (localhost, 127.0.0.1, [::1]) and --public-url",
                )
        reason = cross_site_reason(request, public)
        if reason is not None:
            return error_response(
                403,
                f"cross-site request refused: {reason}; the relay's API is for its own dashboard "
                "and for clients that are not web pages",
            )
        return await handler(request)

    return middleware


# The dashboard loads only its own files (no inline script, no other origin) and may not
# be framed (clickjacking). data: is the favicon's empty ``<link rel="icon">``. Inline
# *styles* are allowed because xterm.js (the agent view's terminal) writes its cell sizes
# and theme into <style> elements and true colours into style attributes; our own files
# still have none, and with every fetch, image and font limited to 'self' an injected
# style could not send anything anywhere (ADR 0038).
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Anything else is data, never a document: nothing in it runs, nothing may frame it.
DATA_CSP = "default-src 'none'; frame-ancestors 'none'"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response the app prepares: no MIME sniffing, no framing, no referrer."""
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Content-Security-Policy"] = DASHBOARD_CSP if request.path == "/" else DATA_CSP
