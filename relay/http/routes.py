"""Handlers: parse JSON into a command, call one service method, answer.

No domain decision is made here. Every write is answered only after the
service says it is durable and applied, so the read models queried for the
answer already include it.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
from aiohttp import web

from relay import commands as c
from relay.domain.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from relay.domain.placement import NoPlacementError, place
from relay.domain.rules import (
    INPUT_ACTION,
    ORCHESTRATOR_AGENT_PREFIX,
    check_id,
    check_orchestrator_id,
)
from relay.http import parse, past
from relay.http.auth import OPERATOR, hash_token, presented_token, principal
from relay.http.keys import SERVICE
from relay.service import RelayService
from relay.wire import shapes as w
from relay.wire.declare import decode

routes = web.RouteTableDef()


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def svc(request: web.Request) -> RelayService:
    return request.app[SERVICE]


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


def _agent(s: RelayService, agent_id: str) -> dict[str, Any]:
    agent = s.rm.agents.get(agent_id)
    if agent is None:
        raise NotFoundError(f"no agent {agent_id!r}")
    return agent


@routes.post("/api/agents")
async def register_agent(request: web.Request) -> web.Response:
    s = svc(request)
    reg = await parse.body(request, w.AgentRegistration)
    await s.execute(c.RegisterAgent(**reg.command_fields(), at=s.now()))
    return json(_agent(s, reg.id), status=201)


@routes.get("/api/agents")
async def list_agents(request: web.Request) -> web.Response:
    q = parse.query(request, w.AgentsQuery)
    return json((await past.read_models(request, q.at)).agents_sorted(q.status))


@routes.post("/api/agents/spawn")
async def spawn_anywhere(request: web.Request) -> web.Response:
    s = svc(request)
    req = await parse.body(request, w.SpawnRequest)
    try:
        target = place(
            s.rm.placement_candidates(
                req.provider, req.selector or {}, s.now(), s.settings.stale_after_ms, s.grace_from()
            ),
            req.provider,
            req.selector or {},
        )
    except NoPlacementError as e:
        raise NoPlacementError(
            f"{e.message} (online: heard from within stale-after, {s.settings.stale_after:g} s)"
        ) from None
    command = await _spawn(s, target.id, req, principal(request))
    return json(
        {
            "ok": True,
            "orchestratorId": target.id,
            "provider": req.provider,
            "command": command,
        },
        status=202,
    )


@routes.get("/api/agents/{id}")
async def get_agent(request: web.Request) -> web.Response:
    return json(_agent(svc(request), path_id(request)))


@routes.post("/api/agents/{id}/heartbeat")
async def heartbeat_agent(request: web.Request) -> web.Response:
    s = svc(request)
    agent_id = path_id(request)
    await parse.body(request, w.Empty, required=False)
    orchestrator = _orchestrator_of_agent(s, agent_id)
    if orchestrator is not None:
        await s.execute(c.HeartbeatOrchestrator(orchestrator, s.now()))
    else:
        await s.execute(c.HeartbeatAgent(agent_id, s.now()))
    return json({"ok": True})


@routes.delete("/api/agents/{id}")
async def remove_agent(request: web.Request) -> web.Response:
    s = svc(request)
    agent_id = path_id(request)
    orchestrator = _orchestrator_of_agent(s, agent_id)
    if orchestrator is not None:
        raise ConflictError(
            f"agent {agent_id!r} is orchestrator {orchestrator!r}'s own record; "
            "remove the orchestrator instead"
        )
    await s.execute(c.RemoveAgent(agent_id, s.now()))
    return json({"ok": True})


def _orchestrator_of_agent(s: RelayService, agent_id: str) -> str | None:
    if not agent_id.startswith(ORCHESTRATOR_AGENT_PREFIX):
        return None
    oid = agent_id[len(ORCHESTRATOR_AGENT_PREFIX) :]
    if oid in s.rm.orchestrators:
        return oid
    raise NotFoundError(f"no agent {agent_id!r}")


# -- orchestrators -------------------------------------------------------------------


def _orchestrator(s: RelayService, orchestrator_id: str) -> dict[str, Any]:
    o = s.rm.orchestrators.get(orchestrator_id)
    if o is None:
        raise NotFoundError(f"no orchestrator {orchestrator_id!r}")
    return o


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
    body = dict(_orchestrator(s, oid))
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
    body = dict(_orchestrator(s, oid))
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
    body = (await past.read_models(request, q.at)).orchestrators_json()
    return web.Response(body=body, content_type="application/json")


@routes.get("/api/orchestrators/{id}")
async def get_orchestrator(request: web.Request) -> web.Response:
    return json(_orchestrator(svc(request), path_id(request)))


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
    return json(_orchestrator(s, oid))


def _deadline(s: RelayService, asked: int | None, at: int) -> int:
    """A request may ask for a shorter deadline than the relay's, never a longer one."""
    most = s.settings.command_deadline
    seconds = most if asked is None else min(float(asked), most)
    return at + int(seconds * 1000)


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
    return s.rm.commands[command_id]


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
        {"ok": True, "action": req.action, "command": s.rm.commands[command_id]},
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
        {"ok": True, "action": INPUT_ACTION, "command": s.rm.commands[command_id]}, status=202
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
    return json({"ok": True, "recorded": recorded, "managedAgent": s.rm.managed_agent(oid, agent_id)})


@routes.get("/api/orchestrators/{id}/commands")
async def list_commands(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    status = parse.query(request, w.CommandsQuery).status
    _orchestrator(s, oid)
    return json(s.rm.commands_of(oid, status))


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
    return json(s.rm.commands[command_id])


@routes.post("/api/orchestrators/{id}/commands/{commandId}/progress")
async def command_progress(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    command_id = path_id(request, "commandId")
    await parse.body(request, w.CommandProgressRequest)
    await s.execute(c.StartCommand(orchestrator_id=oid, command_id=command_id, at=s.now()))
    return json(s.rm.commands[command_id])


@routes.get("/api/managed-agents")
async def list_managed_agents(request: web.Request) -> web.Response:
    q = parse.query(request, w.ManagedAgentsQuery)
    return json((await past.read_models(request, q.at)).managed_agents(q.state, q.attention))


# -- history (relay.http.past) -------------------------------------------------------


@routes.get("/api/orchestrators/{id}/history")
async def orchestrator_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "orchestrator", path_id(request)))


@routes.get("/api/agents/{id}/history")
async def agent_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "agent", path_id(request)))
