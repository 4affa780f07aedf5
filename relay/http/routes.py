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
from relay.domain.errors import ConflictError, NotFoundError
from relay.domain.rules import ORCHESTRATOR_AGENT_PREFIX, check_id
from relay.http import parse, past
from relay.http.auth import hash_token, principal
from relay.http.keys import SERVICE
from relay.service import RelayService

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
    await parse.read_json(request, required=False)
    result = await svc(request).reap()
    return json(
        {
            "ok": True,
            "reapedAgentIds": result.reaped_agent_ids,
            "reapedOrchestratorIds": result.reaped_orchestrator_ids,
            "releasedMessageIds": result.released_message_ids,
            "releasedTaskIds": [],
        }
    )


@routes.get("/api/log")
async def read_log(request: web.Request) -> web.Response:
    after = parse.query_int(request, "after", 0, 0, 2**62)
    limit = parse.query_int(request, "limit", 100, 1, 1000)
    s = svc(request)
    events, nxt = await s.read_log(after, limit)
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
    fields = parse.agent_registration(await parse.read_json(request))
    await s.execute(c.RegisterAgent(**fields, at=s.now()))
    return json(_agent(s, fields["agent_id"]), status=201)


@routes.get("/api/agents")
async def list_agents(request: web.Request) -> web.Response:
    status = parse.query_choice(request, "status", ("online", "offline"))
    return json((await past.read_models(request)).agents_sorted(status))


@routes.post("/api/agents/spawn")
async def spawn_anywhere(request: web.Request) -> web.Response:
    s = svc(request)
    fields = parse.spawn(await parse.read_json(request))
    target = next(
        (
            o
            for o in s.rm.orchestrators_sorted()
            if o["status"] == "online" and fields["provider"] in o["providers"]
        ),
        None,
    )
    if target is None:
        raise ConflictError(f"no online orchestrator offers provider {fields['provider']!r}")
    command = await _spawn(s, target["id"], fields, principal(request))
    return json(
        {
            "ok": True,
            "orchestratorId": target["id"],
            "provider": fields["provider"],
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
    await parse.read_json(request, required=False)
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
    s = svc(request)
    fields = parse.orchestrator_registration(await parse.read_json(request))
    token, token_hash = new_token()
    await s.execute(c.RegisterOrchestrator(**fields, token_hash=token_hash, at=s.now()))
    body = dict(_orchestrator(s, fields["orchestrator_id"]))
    body["orchestratorToken"] = token
    return json(body, status=201)


@routes.get("/api/orchestrators")
async def list_orchestrators(request: web.Request) -> web.Response:
    body = (await past.read_models(request)).orchestrators_json()
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
    await parse.read_json(request, required=False)
    await s.execute(c.HeartbeatOrchestrator(oid, s.now()))
    return json({"ok": True})


@routes.patch("/api/orchestrators/{id}/agents")
async def report_agents(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    at = s.now()
    agents = parse.managed_agents(await parse.read_json(request), at)
    await s.execute(c.ReportManagedAgents(oid, agents, at))
    return json(_orchestrator(s, oid))


async def _spawn(
    s: RelayService, oid: str, fields: dict[str, Any], requested_by: str
) -> dict[str, Any]:
    command_id = str(uuid.uuid4())
    await s.execute(
        c.RequestSpawn(
            orchestrator_id=oid,
            command_id=command_id,
            requested_by=requested_by,
            at=s.now(),
            **fields,
        )
    )
    return s.rm.commands[command_id]


@routes.post("/api/orchestrators/{id}/spawn")
async def spawn(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    fields = parse.spawn(await parse.read_json(request))
    command = await _spawn(s, oid, fields, principal(request))
    return json({"ok": True, "orchestratorId": oid, "command": command}, status=202)


@routes.post("/api/orchestrators/{id}/actions")
async def act(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    fields = parse.action(await parse.read_json(request))
    command_id = str(uuid.uuid4())
    await s.execute(
        c.RequestAction(
            orchestrator_id=oid,
            command_id=command_id,
            requested_by=principal(request),
            at=s.now(),
            **fields,
        )
    )
    return json(
        {"ok": True, "action": fields["action"], "command": s.rm.commands[command_id]},
        status=202,
    )


@routes.get("/api/orchestrators/{id}/commands")
async def list_commands(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    status = parse.query_choice(request, "status", ("pending", "done", "failed"))
    _orchestrator(s, oid)
    return json(s.rm.commands_of(oid, status))


@routes.post("/api/orchestrators/{id}/commands/{commandId}/result")
async def command_result(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    command_id = path_id(request, "commandId")
    fields = parse.command_result(await parse.read_json(request))
    await s.execute(
        c.RecordCommandResult(orchestrator_id=oid, command_id=command_id, at=s.now(), **fields)
    )
    return json(s.rm.commands[command_id])


@routes.get("/api/managed-agents")
async def list_managed_agents(request: web.Request) -> web.Response:
    return json((await past.read_models(request)).managed_agents())


# -- history (relay.http.past) -------------------------------------------------------


@routes.get("/api/orchestrators/{id}/history")
async def orchestrator_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "orchestrator", path_id(request)))


@routes.get("/api/agents/{id}/history")
async def agent_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "agent", path_id(request)))
