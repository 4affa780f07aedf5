"""Every AppKey of the aiohttp application, in one place."""

from __future__ import annotations

from aiohttp import web

from relay.config import Settings
from relay.service import RelayService

SERVICE = web.AppKey("service", RelayService)
SETTINGS = web.AppKey("settings", Settings)

# Who is calling: "operator" or "orchestrator:<id>"; set by the auth middleware.
PRINCIPAL = web.RequestKey("principal", str)
