"""Handlers: parse JSON into a command, call one service method, answer.

No domain decision is made here: which host a spawn without one goes to is a
query (``Queries.placement``), what a heartbeat or a removal on an
orchestrator's own agent id means is the application's (``RelayApp``), a
deadline's cap is a rule (``deadline_at``). Answers come from named queries
(``relay.projections.queries``), never from the read models' insides. Every
write is answered only after the service says it is durable and applied, so
the read models queried for the answer already include it.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
from aiohttp import web

from relay import commands as c
from relay.domain.errors import ForbiddenError, InvalidInputError
from relay.domain.rules import INPUT_ACTION, check_id, check_orchestrator_id, deadline_at
from relay.http import parse, past
from relay.http.auth import OPERATOR, hash_token, presented_token, principal
from relay.http.keys import SERVICE
from relay.projections.queries import Queries
from relay.service import RelayService
from relay.wire import shapes as w
from relay.wire.declare import decode

routes = web.RouteTableDef()


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def svc(request: web.Request) -> RelayService:
    return request.app[SERVICE]


def read(request: web.Request) -> Queries:
    """The named queries over the live read models."""
    return Queries(request.app[SERVICE].rm)


def path_id(request: web.Request, name: str = "id") -> str:
    return check_id(name, request.match_info[name])


def new_token() -> tuple[str, str]:
    """A fresh orchestrator token and the hash that goes into the log."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


# -- system ------------------------------------------------------------------------


@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    return json(await svc(request).health())


@routes.post("/api/system/reap")
async def reap(request: web.Request) -> web.Response:
    await parse.body(request, w.Empty, required=False)
    force = parse.query(request, w.ReapQuery).force == "true"
    result = await svc(request).reap(force=force)
    return json(
        {
            "ok": True,
            "reapedAgentIds": result.reaped_agent_ids,
            "reapedOrchestratorIds": result.reaped_orchestrator_ids,
            "releasedMessageIds": result.released_message_ids,
            "releasedTaskIds": [],
            "expiredCommandIds": result.expired_command_ids,
            "lostOrchestratorIds": result.lost_orchestrator_ids,
            "suspended": result.suspended,
        }
    )


@routes.get("/api/log")
async def read_log(request: web.Request) -> web.Response:
    page = parse.query(request, w.Page)
    after = page.after
    s = svc(request)
    events, nxt = await s.read_log(after, page.limit)
    intervals = await s.read_intervals(after, nxt) if nxt > after else []
    return json({"events": events, "next": nxt, "intervals": intervals})


# -- agents ------------------------------------------------------------------------


@routes.post("/api/agents")
async def register_agent(request: web.Request) -> web.Response:
    s = svc(request)
    reg = await parse.body(request, w.AgentRegistration)
    await s.execute(c.RegisterAgent(**reg.command_fields(), at=s.now()))
    return json(read(request).agent(reg.id), status=201)


@routes.get("/api/agents")
async def list_agents(request: web.Request) -> web.Response:
    q = parse.query(request, w.AgentsQuery)
    return json((await past.queries(request, q.at)).agents(q.status))


@routes.post("/api/agents/spawn")
async def spawn_anywhere(request: web.Request) -> web.Response:
    s = svc(request)
    req = await parse.body(request, w.SpawnRequest)
    target = read(request).placement(
        req.provider, req.selector or {}, s.now(), s.settings.stale_after_ms, s.grace_from()
    )
    command = await _spawn(s, target, req, principal(request))
    return json(
        {
            "ok": True,
            "orchestratorId": target,
            "provider": req.provider,
            "command": command,
        },
        status=202,
    )


@routes.get("/api/agents/{id}")
async def get_agent(request: web.Request) -> web.Response:
    return json(read(request).agent(path_id(request)))


@routes.post("/api/agents/{id}/heartbeat")
async def heartbeat_agent(request: web.Request) -> web.Response:
    """An orchestrator's own agent id beats for the orchestrator (the application decides)."""
    s = svc(request)
    agent_id = path_id(request)
    await parse.body(request, w.Empty, required=False)
    await s.execute(c.HeartbeatAgent(agent_id, s.now()))
    return json({"ok": True})


@routes.delete("/api/agents/{id}")
async def remove_agent(request: web.Request) -> web.Response:
    """An orchestrator's own agent record is refused (409) by the application."""
    s = svc(request)
    await s.execute(c.RemoveAgent(path_id(request), s.now()))
    return json({"ok": True})


# -- orchestrators -------------------------------------------------------------------


@routes.post("/api/orchestrators")
async def register_orchestrator(request: web.Request) -> web.Response:
    """The admin registers (and rotates the token); a host token re-registers only itself."""
    s = svc(request)
    reg = await parse.body(request, w.OrchestratorRegistration)
    oid = reg.id
    who = principal(request)
    if who == OPERATOR:
        token, token_hash = new_token()
        await s.execute(
            c.RegisterOrchestrator(reg, token_hash=token_hash, at=s.now())
        )
    else:
        holder = who.removeprefix("orchestrator:")
        if oid != holder:
            raise ForbiddenError(
                f"id: this token belongs to orchestrator {holder!r}; it may re-register only "
                f"itself, not {oid!r}"
            )
        # The host keeps its token (the one it was enrolled with, in its token file).
        token = presented_token(request) or ""
        await s.execute(
            c.ReregisterOwnOrchestrator(reg, token_hash=hash_token(token), at=s.now())
        )
    body = dict(read(request).orchestrator(oid))
    body["orchestratorToken"] = token
    # The relay sets the pace, so hosts and relay never disagree on stale-after (issue 15).
    body["heartbeatIntervalMs"] = s.settings.heartbeat_interval_ms
    return json(body, status=201)


@routes.post("/api/orchestrators/{id}/enroll")
async def enroll_orchestrator(request: web.Request) -> web.Response:
    """Grant a host its baseDir and its own token (admin only; ADR 0013)."""
    s = svc(request)
    oid = check_orchestrator_id("id", request.match_info["id"])
    grant = await parse.body(request, w.Enrollment)
    token, token_hash = new_token()
    await s.execute(
        c.EnrollOrchestrator(
            orchestrator_id=oid, token_hash=token_hash, at=s.now(), **grant.command_fields()
        )
    )
    body = dict(read(request).orchestrator(oid))
    body["orchestratorToken"] = token
    return json(body, status=201)


@routes.post("/api/orchestrators/{id}/token/rotate")
async def rotate_token(request: web.Request) -> web.Response:
    """A new token for the host; the old one is refused from this write on (admin only)."""
    s = svc(request)
    oid = path_id(request)
    await parse.body(request, w.Empty, required=False)
    token, token_hash = new_token()
    await s.execute(c.RotateOrchestratorToken(oid, token_hash, s.now()))
    return json({"orchestratorId": oid, "orchestratorToken": token})


@routes.post("/api/orchestrators/{id}/token/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    """No token works for the host until an admin rotates it or enrolls it again."""
    s = svc(request)
    oid = path_id(request)
    await parse.body(request, w.Empty, required=False)
    await s.execute(c.RevokeOrchestratorToken(oid, s.now()))
    return json({"ok": True})


@routes.get("/api/orchestrators")
async def list_orchestrators(request: web.Request) -> web.Response:
    q = parse.query(request, w.OrchestratorsQuery)
    body = (await past.queries(request, q.at)).orchestrators_json()
    return web.Response(body=body, content_type="application/json")


@routes.get("/api/orchestrators/{id}")
async def get_orchestrator(request: web.Request) -> web.Response:
    return json(read(request).orchestrator(path_id(request)))


@routes.delete("/api/orchestrators/{id}")
async def remove_orchestrator(request: web.Request) -> web.Response:
    s = svc(request)
    await s.execute(c.RemoveOrchestrator(path_id(request), s.now()))
    return json({"ok": True})


@routes.post("/api/orchestrators/{id}/heartbeat")
async def heartbeat_orchestrator(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    beat = await parse.body(request, w.Heartbeat, required=False)
    await s.execute(c.HeartbeatOrchestrator(oid, s.now(), beat.load_fields()))
    return json({"ok": True})


@routes.patch("/api/orchestrators/{id}/agents")
async def report_agents(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    at = s.now()
    report = await parse.body(request, w.ManagedAgentsReport)
    await s.execute(c.ReportManagedAgents(oid, report.as_reported(at), at))
    return json(read(request).orchestrator(oid))


def _deadline(s: RelayService, asked: int | None, at: int) -> int:
    return deadline_at(asked, s.settings.command_deadline, at)


async def _spawn(
    s: RelayService, oid: str, req: w.SpawnRequest, requested_by: str
) -> dict[str, Any]:
    command_id = str(uuid.uuid4())
    at = s.now()
    await s.execute(
        c.RequestSpawn(
            orchestrator_id=oid,
            command_id=command_id,
            requested_by=requested_by,
            at=at,
            stale_after_ms=s.settings.stale_after_ms,
            grace_from=s.grace_from(),
            deadline_at=_deadline(s, req.deadline_seconds, at),
            **req.command_fields(),
        )
    )
    return Queries(s.rm).command(command_id)


@routes.post("/api/orchestrators/{id}/spawn")
async def spawn(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    req = await parse.body(request, w.SpawnRequest)
    command = await _spawn(s, oid, req, principal(request))
    return json({"ok": True, "orchestratorId": oid, "command": command}, status=202)


@routes.post("/api/orchestrators/{id}/actions")
async def act(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    raw = await parse.read_body(request)
    if not raw:
        raise InvalidInputError("body", "a JSON object is required")
    if decode(raw, w.ActionKind).action == INPUT_ACTION:
        return await _input(request, s, oid, decode(raw, w.InputAction))
    req = decode(raw, w.ActionRequest)
    command_id = str(uuid.uuid4())
    at = s.now()
    await s.execute(
        c.RequestAction(
            orchestrator_id=oid,
            command_id=command_id,
            requested_by=principal(request),
            at=at,
            stale_after_ms=s.settings.stale_after_ms,
            grace_from=s.grace_from(),
            deadline_at=_deadline(s, req.deadline_seconds, at),
            **req.command_fields(),
        )
    )
    return json(
        {"ok": True, "action": req.action, "command": read(request).command(command_id)},
        status=202,
    )


async def _input(
    request: web.Request, s: RelayService, oid: str, req: w.InputAction
) -> web.Response:
    """``{action: "input", agentId, text, enter?}``: a command the host types (ADR 0033)."""
    command_id = str(uuid.uuid4())
    at = s.now()
    await s.execute(
        c.RequestInput(
            orchestrator_id=oid,
            command_id=command_id,
            requested_by=principal(request),
            at=at,
            stale_after_ms=s.settings.stale_after_ms,
            grace_from=s.grace_from(),
            deadline_at=_deadline(s, req.deadline_seconds, at),
            **req.command_fields(),
        )
    )
    return json(
        {"ok": True, "action": INPUT_ACTION, "command": read(request).command(command_id)},
        status=202,
    )


@routes.post("/api/orchestrators/{id}/agents/{agentId}/attention")
async def report_attention(request: web.Request) -> web.Response:
    """The host says whether a managed agent waits for a person (ADR 0032); repeats are no-ops."""
    s = svc(request)
    oid = path_id(request)
    agent_id = path_id(request, "agentId")
    report = await parse.body(request, w.AttentionReport)
    recorded = await s.execute(
        c.ReportAttention(
            orchestrator_id=oid, agent_id=agent_id, at=s.now(), **report.command_fields()
        )
    )
    managed = read(request).managed_agent(oid, agent_id)
    return json({"ok": True, "recorded": recorded, "managedAgent": managed})


@routes.get("/api/orchestrators/{id}/commands")
async def list_commands(request: web.Request) -> web.Response:
    oid = path_id(request)
    status = parse.query(request, w.CommandsQuery).status
    return json(read(request).commands_of(oid, status))


@routes.post("/api/orchestrators/{id}/commands/{commandId}/result")
async def command_result(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    command_id = path_id(request, "commandId")
    result = await parse.body(request, w.CommandResultRequest)
    await s.execute(
        c.RecordCommandResult(
            orchestrator_id=oid, command_id=command_id, at=s.now(), **result.command_fields()
        )
    )
    return json(read(request).command(command_id))


@routes.post("/api/orchestrators/{id}/commands/{commandId}/progress")
async def command_progress(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    command_id = path_id(request, "commandId")
    await parse.body(request, w.CommandProgressRequest)
    await s.execute(c.StartCommand(orchestrator_id=oid, command_id=command_id, at=s.now()))
    return json(read(request).command(command_id))


@routes.get("/api/managed-agents")
async def list_managed_agents(request: web.Request) -> web.Response:
    q = parse.query(request, w.ManagedAgentsQuery)
    return json((await past.queries(request, q.at)).managed_agents(q.state, q.attention))


# -- history (relay.http.past) -------------------------------------------------------


@routes.get("/api/orchestrators/{id}/history")
async def orchestrator_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "orchestrator", path_id(request)))


@routes.get("/api/agents/{id}/history")
async def agent_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "agent", path_id(request)))
