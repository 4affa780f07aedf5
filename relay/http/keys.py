"""Every AppKey of the aiohttp application, in one place."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from relay.config import Settings
from relay.service import RelayService


class EventHub(Protocol):
    """What modules other than relay.http.sse use of its EventHub.

    A protocol, not an import: sse imports these keys, so importing sse here
    would be a cycle (ADR 0028).
    """

    def past(self) -> Any: ...

    def log(self) -> Any: ...

    def stats(self) -> dict[str, int]: ...

    # Used by relay.http.output: hook a stream going live, find a host's streams.
    on_attach: list[Any]

    def orchestrator_streams(self, oid: str) -> list[Any]: ...


SERVICE = web.AppKey("service", RelayService)
SETTINGS = web.AppKey("settings", Settings)
# The event stream's hub (relay.http.sse); it also answers ?at= (relay.http.past).
HUB: web.AppKey[EventHub] = web.AppKey("hub")
# Live terminal output: feeds, viewers and push limits (relay.http.output.OutputHub, ADR
# 0031); untyped because output imports these keys, as HUB's protocol explains.
OUTPUT: web.AppKey[Any] = web.AppKey("output")
# Path template → the methods the served OpenAPI document gives it (a 405's Allow header).
ALLOWED_METHODS: web.AppKey[dict[str, str]] = web.AppKey("allowed_methods")

# Who is calling: "operator" or "orchestrator:<id>"; set by the auth middleware.
PRINCIPAL = web.RequestKey("principal", str)
