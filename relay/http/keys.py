"""Every AppKey of the aiohttp application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from relay.config import Settings
from relay.service import RelayService

if TYPE_CHECKING:
    from relay.http.sse import EventHub

SERVICE = web.AppKey("service", RelayService)
SETTINGS = web.AppKey("settings", Settings)
# The event stream's hub (relay.http.sse); it also answers ?at= (relay.http.past).
HUB: web.AppKey[EventHub] = web.AppKey("hub")
# Path template → the methods the served OpenAPI document gives it (a 405's Allow header).
ALLOWED_METHODS: web.AppKey[dict[str, str]] = web.AppKey("allowed_methods")

# Who is calling: "operator" or "orchestrator:<id>"; set by the auth middleware.
PRINCIPAL = web.RequestKey("principal", str)
