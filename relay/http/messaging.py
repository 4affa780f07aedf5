"""Message handlers: send, inbox, list, claim, ack, release, delete (ADR 0010).

Kept beside ``routes.py`` rather than in it so that messaging can grow
without every change touching the core's handler module; the conventions are
the same: parse into a command, execute it, answer from the read models
(which already hold the write).

Who may act as which agent is decided in ``act_as``: the operator may act as
any agent; an orchestrator token only as its own agent ``orchestrator-<id>``;
an agent token (principal ``agent:<id>``, when the auth layer issues them) only
as itself. That is the hook the token rules plug into.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from relay import commands as c
from relay.domain.errors import NotFoundError, RelayError
from relay.domain.message import broadcast_copy_id
from relay.domain.rules import is_broadcast, orchestrator_agent_id
from relay.http import parse
from relay.http.auth import OPERATOR, principal
from relay.http.routes import json, path_id, svc
from relay.projections.messages import recipients
from relay.wire import shapes as w

routes = web.RouteTableDef()


class ForbiddenError(RelayError):
    """Raised when a valid token asks to act as an agent it does not speak for."""

    status = 403


def agent_of(who: str) -> str | None:
    """The agent a principal speaks for (None: the operator, who speaks for anyone)."""
    if who == OPERATOR:
        return None
    kind, _, ident = who.partition(":")
    if kind == "orchestrator":
        return orchestrator_agent_id(ident)
    if kind == "agent":
        return ident
    return ""  # an unknown kind of principal speaks for nobody


def act_as(request: web.Request, agent_id: str, what: str) -> None:
    """Refuse (403) unless the caller may ``what`` as ``agent_id``."""
    own = agent_of(principal(request))
    if own is not None and own != agent_id:
        raise ForbiddenError(
            f"this token speaks for {own or 'no agent'!r}; it may not {what} as {agent_id!r}"
        )


def _message(request: web.Request, message_id: str) -> dict[str, Any]:
    m = svc(request).rm.messages.by_id.get(message_id)
    if m is None:
        raise NotFoundError(
            f"no message {message_id!r} (never sent, or settled and forgotten after "
            "--keep-settled; GET /api/log keeps its history)"
        )
    return m


@routes.post("/api/messages")
async def send(request: web.Request) -> web.Response:
    s = svc(request)
    m = await parse.body(request, w.MessageRequest)
    act_as(request, m.sender, "send messages")
    to = m.to
    broadcast_id: str | None = None
    if is_broadcast(to):
        broadcast_id = str(uuid.uuid4())
        targets = recipients(s.rm, to, m.sender)
        if not targets:
            raise NotFoundError(f"to: no agent matches {to!r} (a broadcast never reaches its sender)")
        deliveries = tuple(c.Delivery(broadcast_copy_id(broadcast_id, r), r) for r in targets)
    else:
        if to not in s.rm.agents:
            raise NotFoundError(f"to: no agent {to!r}")
        deliveries = (c.Delivery(str(uuid.uuid4()), to),)
    ids: list[str] = await s.execute(
        c.SendMessage(
            **m.command_fields(),
            broadcast_id=broadcast_id,
            deliveries=deliveries,
            at=s.now(),
        )
    )
    if broadcast_id is None:
        return json(s.rm.messages.by_id[ids[0]], status=201)
    # The message once, and who got it: not every copy (ADR 0014).
    content = s.rm.messages.broadcasts[broadcast_id]["content"]
    return json(
        {
            "id": broadcast_id,
            "broadcastId": broadcast_id,
            **content,
            "to": to,
            "status": "pending",
            "recipientCount": len(ids),
            "recipients": [s.rm.messages.by_id[i]["recipient"] for i in ids],
            "messageIds": ids,
        },
        status=201,
    )


@routes.get("/api/messages")
async def list_messages(request: web.Request) -> web.Response:
    q = parse.query(request, w.MessagesQuery)
    page, nxt = svc(request).rm.messages.query(
        to=q.to,
        sender=q.sender,
        status=q.status,
        message_type=q.message_type,
        broadcast_id=q.broadcast_id,
        after=q.after,
        limit=q.limit,
    )
    return json({"messages": page, "next": nxt})


@routes.get("/api/messages/{id}")
async def get_message(request: web.Request) -> web.Response:
    return json(_message(request, path_id(request)))


@routes.delete("/api/messages/{id}")
async def delete_message(request: web.Request) -> web.Response:
    s = svc(request)
    message_id = path_id(request)
    _message(request, message_id)
    if agent_of(principal(request)) is not None:
        raise ForbiddenError("only the operator (the admin token) may delete messages")
    await s.execute(c.DeleteMessage(message_id, principal(request), s.now()))
    return json({"ok": True})


@routes.post("/api/messages/{id}/claim")
async def claim(request: web.Request) -> web.Response:
    s = svc(request)
    message_id = path_id(request)
    claim = await parse.body(request, w.ClaimRequest)
    act_as(request, claim.agent_id, "claim messages")
    _message(request, message_id)
    await s.execute(
        c.ClaimMessage(
            message_id,
            claim_id=str(uuid.uuid4()),
            at=s.now(),
            agent_id=claim.agent_id,
            lease_ms=claim.lease_ms,
        )
    )
    return json(_message(request, message_id))


@routes.post("/api/messages/{id}/ack")
async def ack(request: web.Request) -> web.Response:
    s = svc(request)
    message_id = path_id(request)
    holder = await parse.body(request, w.ClaimHolder)
    act_as(request, holder.agent_id, "ack messages")
    _message(request, message_id)
    await s.execute(
        c.AckMessage(message_id, at=s.now(), agent_id=holder.agent_id, claim_id=holder.claim_id)
    )
    return json(_message(request, message_id))


@routes.post("/api/messages/{id}/release")
async def release(request: web.Request) -> web.Response:
    s = svc(request)
    message_id = path_id(request)
    holder = await parse.body(request, w.ClaimHolder)
    act_as(request, holder.agent_id, "release messages")
    _message(request, message_id)
    await s.execute(
        c.ReleaseMessage(message_id, at=s.now(), agent_id=holder.agent_id, claim_id=holder.claim_id)
    )
    return json(_message(request, message_id))


@routes.get("/api/agents/{id}/inbox")
async def inbox(request: web.Request) -> web.Response:
    s = svc(request)
    agent_id = path_id(request)
    act_as(request, agent_id, "read the inbox")
    if agent_id not in s.rm.agents:
        raise NotFoundError(f"no agent {agent_id!r}")
    limit = parse.query(request, w.InboxQuery).limit
    return json(s.rm.messages.inbox(agent_id)[:limit])
