"""Handlers: parse JSON into a command, call one service method, answer.

No domain decision is made here. Every write is answered only after the
service says it is durable and applied, so the read models queried for the
answer already include it.
"""

from __future__ import annotations

import posixpath
import secrets
import uuid
from typing import Any

import orjson
from aiohttp import web

from relay import commands as c
from relay.domain.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from relay.domain.placement import NoPlacementError, place
from relay.domain.rules import (
    ORCHESTRATOR_AGENT_PREFIX,
    PROVIDERS,
    check_id,
    check_orchestrator_id,
)
from relay.http import parse, past
from relay.http.auth import OPERATOR, hash_token, presented_token, principal
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
    force = parse.query_choice(request, "force", ("true", "false")) == "true"
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
    body = await parse.read_json(request)
    fields = parse.spawn(body)
    selector = parse.labels(body, "selector")
    try:
        target = place(
            s.rm.placement_candidates(
                fields["provider"], selector, s.now(), s.settings.stale_after_ms, s.grace_from()
            ),
            fields["provider"],
            selector,
        )
    except NoPlacementError as e:
        raise NoPlacementError(
            f"{e.message} (online: heard from within stale-after, {s.settings.stale_after:g} s)"
        ) from None
    command = await _spawn(s, target.id, fields, principal(request), body)
    return json(
        {
            "ok": True,
            "orchestratorId": target.id,
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
    """The admin registers (and rotates the token); a host token re-registers only itself."""
    s = svc(request)
    raw = await parse.read_json(request)
    fields = parse.orchestrator_registration(raw)
    capacity = parse.capacity(raw)
    oid = fields["orchestrator_id"]
    who = principal(request)
    if who == OPERATOR:
        token, token_hash = new_token()
        await s.execute(
            c.RegisterOrchestrator(**fields, **capacity, token_hash=token_hash, at=s.now())
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
            c.ReregisterOwnOrchestrator(
                **fields, **capacity, token_hash=hash_token(token), at=s.now()
            )
        )
    body = dict(_orchestrator(s, oid))
    body["orchestratorToken"] = token
    # The relay sets the pace, so hosts and relay never disagree on stale-after (issue 15).
    body["heartbeatIntervalMs"] = s.settings.heartbeat_interval_ms
    return json(body, status=201)


def _enrollment(body: dict[str, Any]) -> dict[str, Any]:
    """``{baseDir, hostname?, providers?}``: what an admin grants a host."""
    base_dir = parse.req_str(body, "baseDir", parse.MAX_PATH)
    if not posixpath.isabs(base_dir):
        raise InvalidInputError("baseDir", "must be an absolute path")
    hostname = parse.opt_str(body, "hostname")
    if hostname is not None and not hostname.strip():
        raise InvalidInputError("hostname", "must not be blank")
    providers = parse.str_list(body, "providers", max_items=len(PROVIDERS))
    if providers is not None:
        if not providers:
            raise InvalidInputError("providers", f"must name at least one of {', '.join(PROVIDERS)}")
        for p in providers:
            if p not in PROVIDERS:
                raise InvalidInputError("providers", f"must be a subset of {', '.join(PROVIDERS)}")
    return {
        "hostname": hostname,
        "base_dir": posixpath.normpath(base_dir),
        "providers": providers,
    }


@routes.post("/api/orchestrators/{id}/enroll")
async def enroll_orchestrator(request: web.Request) -> web.Response:
    """Grant a host its baseDir and its own token (admin only; ADR 0013)."""
    s = svc(request)
    oid = check_orchestrator_id("id", request.match_info["id"])
    fields = _enrollment(await parse.read_json(request))
    token, token_hash = new_token()
    await s.execute(
        c.EnrollOrchestrator(orchestrator_id=oid, token_hash=token_hash, at=s.now(), **fields)
    )
    body = dict(_orchestrator(s, oid))
    body["orchestratorToken"] = token
    return json(body, status=201)


@routes.post("/api/orchestrators/{id}/token/rotate")
async def rotate_token(request: web.Request) -> web.Response:
    """A new token for the host; the old one is refused from this write on (admin only)."""
    s = svc(request)
    oid = path_id(request)
    await parse.read_json(request, required=False)
    token, token_hash = new_token()
    await s.execute(c.RotateOrchestratorToken(oid, token_hash, s.now()))
    return json({"orchestratorId": oid, "orchestratorToken": token})


@routes.post("/api/orchestrators/{id}/token/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    """No token works for the host until an admin rotates it or enrolls it again."""
    s = svc(request)
    oid = path_id(request)
    await parse.read_json(request, required=False)
    await s.execute(c.RevokeOrchestratorToken(oid, s.now()))
    return json({"ok": True})


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
    load = parse.heartbeat_load(await parse.read_json(request, required=False))
    await s.execute(c.HeartbeatOrchestrator(oid, s.now(), load))
    return json({"ok": True})


@routes.patch("/api/orchestrators/{id}/agents")
async def report_agents(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    at = s.now()
    agents = parse.managed_agents(await parse.read_json(request), at)
    await s.execute(c.ReportManagedAgents(oid, agents, at))
    return json(_orchestrator(s, oid))


def _deadline(s: RelayService, body: dict[str, Any], at: int) -> int:
    return at + int(parse.deadline_seconds(body, s.settings.command_deadline) * 1000)


async def _spawn(
    s: RelayService, oid: str, fields: dict[str, Any], requested_by: str, body: dict[str, Any]
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
            deadline_at=_deadline(s, body, at),
            **fields,
        )
    )
    return s.rm.commands[command_id]


@routes.post("/api/orchestrators/{id}/spawn")
async def spawn(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    body = await parse.read_json(request)
    fields = parse.spawn(body)
    command = await _spawn(s, oid, fields, principal(request), body)
    return json({"ok": True, "orchestratorId": oid, "command": command}, status=202)


@routes.post("/api/orchestrators/{id}/actions")
async def act(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    body = await parse.read_json(request)
    fields = parse.action(body)
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
            deadline_at=_deadline(s, body, at),
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
    status = parse.query_choice(
        request, "status", ("pending", "running", "done", "failed", "expired")
    )
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


@routes.post("/api/orchestrators/{id}/commands/{commandId}/progress")
async def command_progress(request: web.Request) -> web.Response:
    s = svc(request)
    oid = path_id(request)
    command_id = path_id(request, "commandId")
    parse.progress(await parse.read_json(request))
    await s.execute(c.StartCommand(orchestrator_id=oid, command_id=command_id, at=s.now()))
    return json(s.rm.commands[command_id])


@routes.get("/api/managed-agents")
async def list_managed_agents(request: web.Request) -> web.Response:
    state = parse.query_choice(request, "state", ("running", "unknown", "lost"))
    return json((await past.read_models(request)).managed_agents(state))


# -- history (relay.http.past) -------------------------------------------------------


@routes.get("/api/orchestrators/{id}/history")
async def orchestrator_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "orchestrator", path_id(request)))


@routes.get("/api/agents/{id}/history")
async def agent_history(request: web.Request) -> web.Response:
    return json(await past.history(request, "agent", path_id(request)))
