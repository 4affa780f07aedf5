"""The relay's HTTP API as a host daemon uses it, and its SSE stream.

Errors, from the daemon's point of view::

    RelayClientError            anything that went wrong talking to the relay
    ├── RelayUnavailableError   no answer, 5xx or 429: retry later with backoff
    ├── RelayRejectedError      a 4xx answer: carries status and message
    │   └── NotRegisteredError  404/401/403 on our own resources: register again
    ├── ResumeRefusedError      the stream cannot resume from our position
    └── StreamUnsupportedError  the relay has no event stream: poll instead

Two tokens: the admin ``--token`` only for registration, and the
``orchestratorToken`` that registration returns for everything else.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


class RelayClientError(Exception):
    """Raised when a request to the relay did not succeed."""


class RelayUnavailableError(RelayClientError):
    """Raised when the relay cannot be reached or answers 5xx or 429; worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RelayRejectedError(RelayClientError):
    """Raised when the relay answers 4xx; retrying the same request will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotRegisteredError(RelayRejectedError):
    """Raised when the relay no longer knows us or our token: register again."""


class ResumeRefusedError(RelayClientError):
    """Raised when the relay cannot resume the stream from our position (a reset log)."""


class StreamUnsupportedError(RelayClientError):
    """Raised when the relay has no event stream (404/405); poll instead."""


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event: ``id``, ``event`` name and raw ``data``."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        """The data parsed as JSON (``None`` when it is not JSON)."""
        try:
            return json.loads(self.data)
        except ValueError:
            return None


class SseParser:
    """Incremental parser for the ``text/event-stream`` format (WHATWG rules)."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def feed_line(self, line: str) -> SseEvent | None:
        """Feed one line without its newline; returns an event at a blank line."""
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._id, self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class RelayClient:
    """Calls the relay on behalf of one orchestrator id."""

    def __init__(
        self,
        base_url: str,
        orchestrator_id: str,
        admin_token: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.orchestrator_id = orchestrator_id
        self.admin_token = admin_token
        self.orchestrator_token: str | None = None
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> RelayClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client made it."""
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open aiohttp session (enter the client first)."""
        if self._session is None:
            raise RuntimeError("RelayClient used outside 'async with'")
        return self._session

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @property
    def _own(self) -> str:
        return f"{self.base_url}/api/orchestrators/{quote(self.orchestrator_id, safe='')}"

    async def _request(
        self,
        method: str,
        url: str,
        token: str | None,
        body: Any = None,
        own_resource: bool = True,
    ) -> Any:
        try:
            async with self.session.request(
                method, url, json=body, headers=self._headers(token)
            ) as resp:
                text = await resp.text()
                if resp.status >= 500:
                    raise RelayUnavailableError(f"{method} {url}: {resp.status} {text[:200]}")
                if resp.status >= 400:
                    message = _error_message(text)
                    if own_resource and resp.status in (401, 403, 404):
                        raise NotRegisteredError(resp.status, message)
                    raise RelayRejectedError(resp.status, message)
                return json.loads(text) if text else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise RelayUnavailableError(f"{method} {url}: {exc!r}") from exc

    async def register(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/orchestrators`` with the admin token; keeps the returned token."""
        data = await self._request(
            "POST", f"{self.base_url}/api/orchestrators", self.admin_token, payload,
            own_resource=False,
        )
        if not isinstance(data, dict):
            raise RelayUnavailableError("registration answered without a JSON object")
        token = data.get("orchestratorToken")
        if isinstance(token, str) and token:
            self.orchestrator_token = token
        return data

    @property
    def _token(self) -> str | None:
        # Without an orchestrator token (a relay that issues none) the admin
        # token is the only credential there is.
        return self.orchestrator_token or self.admin_token

    async def heartbeat(self, load: dict[str, Any] | None = None) -> None:
        """``POST .../heartbeat``, with the host's ``load`` when given."""
        body = None if load is None else {"load": load}
        await self._request("POST", f"{self._own}/heartbeat", self._token, body)

    async def start_command(self, command_id: str) -> None:
        """``POST .../commands/{id}/progress {"status": "running"}`` before starting it.

        A 409 (the command is over, expired or past its deadline) raises
        ``RelayRejectedError``: the caller must not start it.
        """
        url = f"{self._own}/commands/{quote(command_id, safe='')}/progress"
        await self._request("POST", url, self._token, {"status": "running"})

    async def report_agents(self, agents: list[dict[str, Any]]) -> None:
        """``PATCH .../agents`` with the full list (it replaces the previous one)."""
        await self._request("PATCH", f"{self._own}/agents", self._token, {"agents": agents})

    async def report_attention(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST .../agents/{agentId}/attention``: whether the agent waits for a person."""
        url = f"{self._own}/agents/{quote(agent_id, safe='')}/attention"
        try:
            data = await self._request("POST", url, self._token, body)
        except NotRegisteredError as exc:
            if exc.status == 404 and "managed agent" in exc.message:
                # The relay knows us, not (yet) this agent: no reason to register again.
                raise RelayRejectedError(exc.status, exc.message) from None
            raise
        return data if isinstance(data, dict) else {}

    async def pending_commands(self) -> list[dict[str, Any]]:
        """``GET .../commands?status=pending``, oldest first when times are given."""
        data = await self._request("GET", f"{self._own}/commands?status=pending", self._token)
        if isinstance(data, dict):
            data = data.get("commands", [])
        commands = [c for c in data or [] if isinstance(c, dict) and "id" in c]
        return sorted(commands, key=lambda c: c.get("requestedAt") or 0)

    async def post_result(self, command_id: str, result: dict[str, Any]) -> None:
        """``POST .../commands/{id}/result``; a 409 (already has one) counts as sent."""
        url = f"{self._own}/commands/{quote(command_id, safe='')}/result"
        try:
            await self._request("POST", url, self._token, result)
        except NotRegisteredError as exc:
            if exc.status == 404 and "command" in exc.message.lower():
                # The command itself is gone; nothing left to tell.
                return
            raise
        except RelayRejectedError as exc:
            if exc.status != 409:
                raise

    async def push_output(self, body: bytes) -> Any:
        """``POST .../output`` with a ready JSON body (live output, ADR 0031).

        A 429 is ``RelayUnavailableError`` with the relay's ``Retry-After``:
        the chunks are lost either way, and the caller sends a fresh screen.
        """
        url = f"{self._own}/output"
        headers = self._headers(self._token)
        headers["Content-Type"] = "application/json"
        try:
            async with self.session.post(url, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status == 429 or resp.status >= 500:
                    raise RelayUnavailableError(
                        f"POST {url}: {resp.status} {_error_message(text)}",
                        retry_after=_seconds(resp.headers.get("Retry-After")),
                    )
                if resp.status >= 400:
                    raise RelayRejectedError(resp.status, _error_message(text))
                return json.loads(text) if text else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise RelayUnavailableError(f"POST {url}: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def event_stream(
        self, last_event_id: str | None
    ) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """Open ``GET /api/events?orchestrator=<id>`` from ``last_event_id`` on.

        Opening and reading are two steps so that a caller can reconcile
        pending commands once the stream is open, knowing that anything
        requested after that arrives on the stream. The read timeout is well
        above the relay's 15 s keep-alive comments: longer silence means a
        dead connection. ``last_event_id`` goes back exactly as the relay sent
        it: ``P``, or ``P.K`` for an event before the last of position P (ADR
        0007); it is never parsed as a number, so no event of a position is lost.
        """
        url = f"{self.base_url}/api/events?orchestrator={quote(self.orchestrator_id, safe='')}"
        headers = self._headers(self._token)
        headers["Accept"] = "text/event-stream"
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=45)
        try:
            async with self.session.get(url, headers=headers, timeout=timeout) as resp:
                if resp.status in (404, 405):
                    raise StreamUnsupportedError(f"GET {url}: {resp.status}")
                if resp.status in (401, 403):
                    raise NotRegisteredError(resp.status, _error_message(await resp.text()))
                if resp.status in (400, 409, 410) and last_event_id:
                    raise ResumeRefusedError(_error_message(await resp.text()))
                if resp.status >= 400:
                    raise RelayUnavailableError(
                        f"GET {url}: {resp.status} {_error_message(await resp.text())}",
                        retry_after=_seconds(resp.headers.get("Retry-After")),
                    )
                yield _read_events(resp)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RelayUnavailableError(f"event stream: {exc!r}") from exc


async def _read_events(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while True:
            cut = _line_end(buffer)
            if cut is None:
                break
            end, size = cut
            line = buffer[:end].decode("utf-8", errors="replace")
            buffer = buffer[end + size:]
            event = parser.feed_line(line)
            if event is not None:
                yield event


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line ends (CRLF, LF or CR) and the terminator's size."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, 1)
    if cr + 1 == len(buffer):
        return None  # maybe the CR of a CRLF split across chunks
    return (cr, 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, 1)


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return text[:200]
