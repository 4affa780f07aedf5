"""The OpenAPI 3 document the relay serves at ``/api/openapi.json``.

The schemas are generated from the wire shapes (relay.wire.shapes, ADR 0029),
the same declarations the handlers decode into, so the document and the
validator cannot disagree. What is written here by hand is what the code
cannot say: which statuses each operation answers and why, links between
operations, and prose. A test checks that every route the application
registers appears here.
"""

from __future__ import annotations

from typing import Any

from relay import __version__
from relay.http import openapi_attention, openapi_messages, openapi_output, openapi_tokens
from relay.http.openapi_parts import (
    array_of,
    components,
    err,
    ok,
    params,
    path_param,
    schema_of,
)
from relay.http.openapi_parts import body as _body
from relay.http.sse.names import NAMES
from relay.wire import shapes as w

STR = {"type": "string"}


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


COMMON_ERRORS = {
    "401": err(
        "Missing or wrong token (when the relay has an admin token), or any token the relay "
        "does not know.",
        {"WWW-Authenticate": {"schema": STR}},
    ),
    "403": err(
        "An orchestrator token used outside that orchestrator's own resources, or a browser "
        "request from another site (`Origin`, `Sec-Fetch-Site`)."
    ),
    "421": err(
        "A relay without an admin token answers only loopback Host names and --public-url's."
    ),
}
BODY_ERRORS = {
    "400": err("Invalid input; the message names the field."),
    "408": err("The body did not arrive within --client-timeout."),
    "413": err("Body over the limit (--max-body, default 1 MiB)."),
    "415": err("Body is not JSON."),
}
WRITE_ERRORS = {
    "503": err("The log cannot be written right now (disk full, read-only); nothing was recorded."),
}
PATH_ID = path_param("id")
OPTIONAL_BODY = _body(w.Empty, required=False)


def _op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**COMMON_ERRORS, **responses},  # an operation may say more about 401/403
    }
    op.update(extra)
    return op


_COMMAND_LINKS = {
    "RecordTheResult": _link(
        "recordCommandResult", id="$response.body#/orchestratorId", commandId="$response.body#/command/id"
    ),
    "ListTheCommands": _link("listCommands", id="$response.body#/orchestratorId"),
}
_ORCHESTRATOR_LINKS = {
    "GetIt": _link("getOrchestrator", id="$response.body#/id"),
    "Heartbeat": _link("heartbeatOrchestrator", id="$response.body#/id"),
    "ReportAgents": _link("reportManagedAgents", id="$response.body#/id"),
    "Spawn": _link("spawnOn", id="$response.body#/id"),
    "Act": _link("requestAction", id="$response.body#/id"),
    "ListCommands": _link("listCommands", id="$response.body#/id"),
    "RemoveIt": _link("removeOrchestrator", id="$response.body#/id"),
}
_AGENT_LINKS = {
    "GetIt": _link("getAgent", id="$response.body#/id"),
    "Heartbeat": _link("heartbeatAgent", id="$response.body#/id"),
    "RemoveIt": _link("removeAgent", id="$response.body#/id"),
}
_BAD_ID = {"400": err("Malformed id.")}

PATHS: dict[str, Any] = {
    "/api/health": {
        "get": {
            "operationId": "health",
            "summary": "Health of the store, the writer, the read models, the reaper and the "
            "notifier. "
            "Never needs a token.",
            "security": [],
            "responses": {"200": ok(w.Health)},
        }
    },
    "/api/openapi.json": {
        "get": _op("openapi", "This document.", {"200": ok({"type": "object"})})
    },
    "/metrics": {
        "get": _op(
            "metrics",
            "Operations metrics in Prometheus text format. Needs the admin token when the relay "
            "has one, unless it was started with --metrics-public (a scraper on a private network).",
            {
                "200": {
                    "description": "Prometheus exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        )
    },
    "/api/log": {
        "get": _op(
            "readLog",
            "The raw domain events after a position, oldest first, archived ones included. "
            "Heartbeats older than the relay's `--keep-heartbeats` are thinned: their "
            "positions are gaps among `events`, and `intervals` says who was present there.",
            {
                "200": ok(w.LogPage),
                "400": err("after or limit out of range, not an integer, or given twice."),
            },
            parameters=params(w.Page),
        )
    },
    "/api/system/reap": {
        "post": _op(
            "reap",
            "Reap now: mark offline whatever has been silent longer than stale-after. "
            "While the reaper is suspended (a mass outage: see /api/health) nothing is "
            "reaped unless force=true.",
            {"200": ok(w.ReapResult), **BODY_ERRORS, **WRITE_ERRORS},
            requestBody=OPTIONAL_BODY,
            parameters=params(w.ReapQuery),
        )
    },
    "/api/agents": {
        "post": _op(
            "registerAgent",
            "Register an agent (again: updates it and sets it online).",
            {
                "201": ok(w.Agent, "Registered.", _AGENT_LINKS),
                **BODY_ERRORS,
                **WRITE_ERRORS,
            },
            requestBody=_body(w.AgentRegistration),
        ),
        "get": _op(
            "listAgents",
            "All agents by id, orchestrators' own agent records included.",
            {
                "200": ok(array_of(w.Agent)),
                "400": err("Malformed filter, or `at` is not a position in the log."),
            },
            parameters=params(w.AgentsQuery),
        ),
    },
    "/api/agents/spawn": {
        "post": _op(
            "spawnAnywhere",
            "Spawn on the first online orchestrator (by hostname) that offers the provider.",
            {
                "202": ok(w.SpawnAccepted, "Command recorded.", _COMMAND_LINKS),
                **BODY_ERRORS,
                "400": err(
                    "Invalid input, or the chosen orchestrator refuses it (cwd outside its "
                    "baseDir); the message names the field."
                ),
                "409": err(
                    "No online orchestrator offers the provider (online: not marked offline, "
                    "and heard from within --stale-after)."
                ),
                **WRITE_ERRORS,
            },
            requestBody=_body(w.SpawnRequest),
        )
    },
    "/api/agents/{id}": {
        "get": _op(
            "getAgent",
            "One agent.",
            {"200": ok(w.Agent), **_BAD_ID, "404": err("No such agent.")},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "removeAgent",
            "Remove an agent.",
            {
                "200": ok(w.Ok),
                **_BAD_ID,
                "404": err("No such agent."),
                "409": err("The agent is an orchestrator's own record: remove the orchestrator."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
        ),
    },
    "/api/agents/{id}/heartbeat": {
        "post": _op(
            "heartbeatAgent",
            "Proof of life; brings an offline agent back online.",
            {
                "200": ok(w.Ok),
                **BODY_ERRORS,
                "404": err("No such agent."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=OPTIONAL_BODY,
        )
    },
    "/api/orchestrators": {
        "post": _op(
            "registerOrchestrator",
            "Register an orchestrator. With the admin token: (again) updates it, sets it "
            "online, grants its baseDir and rotates its token. With the orchestrator's own "
            "token: re-registers itself only, keeps its token (answered back), and its baseDir "
            "must stay inside the one an admin granted (ADR 0013).",
            {
                "201": ok(w.OrchestratorWithToken, "Registered.", _ORCHESTRATOR_LINKS),
                **BODY_ERRORS,
                **WRITE_ERRORS,
                "403": err(
                    "An orchestrator token registering another id, or widening its baseDir "
                    "beyond the one an admin granted; nothing is recorded."
                ),
            },
            requestBody=_body(w.OrchestratorRegistration),
        ),
        "get": _op(
            "listOrchestrators",
            "All orchestrators, sorted by hostname.",
            {
                "200": ok(array_of(w.Orchestrator)),
                "400": err("`at` is not a position in the log."),
            },
            parameters=params(w.OrchestratorsQuery),
        ),
    },
    "/api/orchestrators/{id}": {
        "get": _op(
            "getOrchestrator",
            "One orchestrator.",
            {"200": ok(w.Orchestrator), **_BAD_ID, "404": err("No such orchestrator.")},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "removeOrchestrator",
            "Remove it and its agent record (its token stops working); its managed agents keep "
            "running on the host.",
            {
                "200": ok(w.Ok),
                **_BAD_ID,
                "404": err("No such orchestrator."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
        ),
    },
    "/api/orchestrators/{id}/heartbeat": {
        "post": _op(
            "heartbeatOrchestrator",
            "Proof of life for the orchestrator and its agent record. Its own token suffices.",
            {
                "200": ok(w.Ok),
                **BODY_ERRORS,
                "404": err("No such orchestrator (or it was removed)."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=_body(w.Heartbeat, required=False),
        )
    },
    "/api/orchestrators/{id}/agents": {
        "patch": _op(
            "reportManagedAgents",
            "Report the managed agents; the list replaces the previous one. Its own token suffices.",
            {
                "200": ok(w.Orchestrator),
                **BODY_ERRORS,
                "404": err("No such orchestrator."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=_body(w.ManagedAgentsReport),
        )
    },
    "/api/orchestrators/{id}/spawn": {
        "post": _op(
            "spawnOn",
            "Ask the orchestrator to start an agent.",
            {
                "202": ok(w.SpawnAccepted, "Command recorded.", _COMMAND_LINKS),
                **BODY_ERRORS,
                "400": err(
                    "Invalid input, a provider it does not offer, or a cwd outside its baseDir; "
                    "the message names the field."
                ),
                "404": err("No such orchestrator."),
                "409": err(
                    "The orchestrator is offline: marked so, or silent for longer than "
                    "--stale-after though not yet reaped."
                ),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=_body(w.SpawnRequest),
        )
    },
    "/api/orchestrators/{id}/actions": {
        "post": _op(
            "requestAction",
            "Restart or shut down one managed agent, or all when agentId is omitted; or type "
            "text into one (action: input, ADR 0033; the admin's only).",
            {
                "202": ok(
                    w.ActionAccepted,
                    "Command recorded.",
                    {
                        "RecordTheResult": _link(
                            "recordCommandResult",
                            id="$request.path.id",
                            commandId="$response.body#/command/id",
                        )
                    },
                ),
                **BODY_ERRORS,
                "404": err("No such orchestrator or managed agent."),
                "409": err(
                    "The orchestrator is offline: marked so, or silent for longer than "
                    "--stale-after though not yet reaped."
                ),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=openapi_attention.ACTION_BODY,
        )
    },
    "/api/orchestrators/{id}/commands": {
        "get": _op(
            "listCommands",
            "That host's commands, oldest first. Its own token suffices.",
            {
                "200": ok(array_of(w.Command)),
                "400": err("Malformed id, or an unknown or repeated status filter."),
                "404": err("No such orchestrator."),
            },
            parameters=[PATH_ID, *params(w.CommandsQuery)],
        )
    },
    "/api/orchestrators/{id}/commands/{commandId}/progress": {
        "post": _op(
            "recordCommandProgress",
            "The host started the command: it becomes running (again: no-op). Refused once "
            "the command is over or past its deadline, so a host never starts it late. Its "
            "own token suffices.",
            {
                "200": ok(w.Command),
                **BODY_ERRORS,
                "404": err("No such orchestrator or command."),
                "409": err("The command is over, or past its deadline."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID, path_param("commandId")],
            requestBody=_body(w.CommandProgressRequest),
        )
    },
    "/api/orchestrators/{id}/commands/{commandId}/result": {
        "post": _op(
            "recordCommandResult",
            "Record a command's result; exactly one per command. Its own token suffices.",
            {
                "200": ok(w.Command),
                **BODY_ERRORS,
                "404": err("No such orchestrator or command."),
                "409": err("The command already has a result, or expired."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID, path_param("commandId")],
            requestBody=_body(w.CommandResultRequest),
        )
    },
    "/api/managed-agents": {
        "get": _op(
            "listManagedAgents",
            "Every managed agent across hosts, with where it runs; ?state= and ?attention= "
            "filter (?attention=input is the needs-input queue).",
            {
                "200": ok(array_of(w.ManagedAgentListing)),
                "400": err("Malformed filter, or `at` is not a position in the log."),
            },
            parameters=params(w.ManagedAgentsQuery),
        )
    },
}


# Messaging (ADR 0010) and tokens (ADR 0013) keep their parts of the document in their own modules.
PATHS.update(openapi_messages.PATHS)
PATHS.update(openapi_tokens.PATHS)
PATHS.update(openapi_attention.PATHS)
PATHS.update(openapi_output.PATHS)  # live output (ADR 0031)


# -- the log, live and past (relay.http.sse, relay.http.past) ------------------------

def _log_op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**COMMON_ERRORS, **responses},  # an operation may say more about 401/403
        **extra,
    }


_HISTORY = {
    "200": ok(w.HistoryPage),
    "400": err("Malformed id, after or limit."),
}
_PAGING = params(w.Page)
PATHS.update(
    {
        "/api/events": {
            "get": _log_op(
                "streamEvents",
                "The log's tail as Server-Sent Events. Each event has an `event:` name "
                "(" + ", ".join(n.name for n in NAMES.values()) + "), the entity as JSON "
                "`data:` (" + openapi_attention.SSE_EVENTS + ") and an `id:` of "
                "its own that increases: a log position can carry several events, so the last "
                "event of position P has the id `P` and the earlier ones `P.0`, `P.1`, ... (K "
                "counts all of P's events, so ids are the same under every filter). Resuming "
                "with Last-Event-ID (which wins) or ?since= gives every event after that id "
                "once, in order, then the live tail without a seam: `P` means all of P was "
                "received, `P.K` resumes with the event after P.K. A comment "
                "arrives at least every --keepalive seconds; a stream that falls --sse-buffer "
                "bytes behind is ended (resume to continue). An ?orchestrator= stream also gets "
                "`orchestrator.watch` frames (OutputWatch data, no id: not log events) telling "
                "that host which of its agents someone watches live (ADR 0031).",
                {
                    "200": {
                        "description": "The stream (text/event-stream), until the client or the "
                        "relay ends it.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        "x-sse-events": openapi_output.WATCH_EVENTS,
                    },
                    "400": err("Malformed since, Last-Event-ID, types or orchestrator."),
                    "409": err(
                        "The resume position is after the newest position in the log, or older "
                        "than the oldest it still holds, or `P.K` names no event of position P: "
                        "reload and follow without one."
                    ),
                    "429": err("Too many open streams from this client address."),
                },
                parameters=[
                    *params(w.EventsQuery),
                    {"name": "Last-Event-ID", "in": "header", "schema": schema_of(w.EventId)},
                ],
            )
        },
        "/api/orchestrators/{id}/history": {
            "get": _log_op(
                "getOrchestratorHistory",
                "One orchestrator's events (commands included), oldest first, paged. Still "
                "readable after the orchestrator is removed: the log keeps its account.",
                {**_HISTORY, "404": err("The orchestrator never appeared in the log.")},
                parameters=[PATH_ID, *_PAGING],
            )
        },
        "/api/agents/{id}/history": {
            "get": _log_op(
                "getAgentHistory",
                "One agent's events, oldest first, paged, also after the agent is removed (an "
                "orchestrator's own agent: the orchestrator's events).",
                {**_HISTORY, "404": err("The agent never appeared in the log.")},
                parameters=[PATH_ID, *_PAGING],
            )
        },
    }
)


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay",
            "version": __version__,
            "description": "An event-sourced relay for fleets of AI coding agents. "
            "Every accepted write is durable in the log and visible in the read models "
            "before it is answered; a rejected request appends nothing.",
        },
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "relayToken": {"type": "apiKey", "in": "header", "name": "X-Agent-Relay-Token"},
                "queryToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "Accepted on GET /api/events and GET .../agents/{agentId}/output "
                    "only (EventSource cannot set headers).",
                },
            },
        },
        # The admin token or, on an orchestrator's own resources, its orchestratorToken.
        # A relay started without --token (loopback only) asks for none.
        "security": [{"bearer": []}, {"relayToken": []}],
        "paths": PATHS,
    }
