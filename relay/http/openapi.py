"""The OpenAPI 3 document the relay serves at ``/api/openapi.json``.

Written by hand beside the routes (not generated) so that it can say what the
code cannot: limits, error cases, and why. A test checks that every route the
application registers appears here, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from relay import __version__
from relay.http import openapi_messages
from relay.domain.rules import APPROVAL_MODES, MAX_PROMPT_CHARS, PROVIDERS

ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 120,
    "pattern": "^[^/\\s]+$",
    "description": "1-120 printable characters without '/' or whitespace.",
}
EPOCH_MS = {"type": "integer", "description": "Epoch milliseconds (server receive time)."}
STR = {"type": "string"}
NAME = {"type": "string", "maxLength": 200}
NULLABLE_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


COMMON_ERRORS = {
    "401": _err("Missing or wrong token (when the relay has one)."),
    "403": _err("The token is valid, but not for this resource."),
}
BODY_ERRORS = {
    "400": _err("Invalid input; the message names the field."),
    "413": _err("Body over the limit (default 1 MiB)."),
    "415": _err("Body is not JSON."),
}
PATH_ID = {"name": "id", "in": "path", "required": True, "schema": ID}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **COMMON_ERRORS}}
    op.update(extra)
    return op


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "One sentence to act on."}},
    },
    "Ok": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
    "Agent": {
        "type": "object",
        "required": [
            "id", "name", "label", "tags", "machine", "capabilities",
            "status", "meta", "lastSeen", "createdAt",
        ],
        "properties": {
            "id": ID,
            "name": STR,
            "label": NULLABLE_STR,
            "tags": {"type": "array", "items": STR},
            "machine": NULLABLE_STR,
            "capabilities": {"type": "array", "items": STR},
            "status": {"enum": ["online", "offline"]},
            "meta": {"type": "object"},
            "lastSeen": EPOCH_MS,
            "createdAt": EPOCH_MS,
        },
    },
    "AgentRegistration": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": ID,
            "name": NAME,
            "label": NAME,
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 64},
            "machine": NAME,
            "capabilities": {
                "type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 64
            },
            "meta": {"type": "object"},
        },
    },
    "ManagedAgent": {
        "type": "object",
        "required": ["agentId", "provider", "tmuxSession", "cwd", "approvalMode", "startedAt"],
        "properties": {
            "agentId": ID,
            "provider": {"enum": list(PROVIDERS)},
            "tmuxSession": NAME,
            "cwd": {"type": "string", "maxLength": 4096},
            "label": NAME,
            "approvalMode": {"enum": list(APPROVAL_MODES), "default": "guarded"},
            "pid": {"type": "integer", "minimum": 0},
            "startedAt": EPOCH_MS,
        },
    },
    "Orchestrator": {
        "type": "object",
        "required": [
            "id", "hostname", "status", "agentId", "providers", "baseDir", "envKeys",
            "meta", "managedAgents", "lastSeen", "createdAt",
        ],
        "properties": {
            "id": ID,
            "hostname": STR,
            "status": {"enum": ["online", "offline"]},
            "agentId": {"type": "string", "description": "orchestrator-<id>"},
            "providers": {"type": "array", "items": {"enum": list(PROVIDERS)}},
            "baseDir": STR,
            "envKeys": {
                "type": "array", "items": STR, "description": "Names only, never values."
            },
            "meta": {"type": "object"},
            "managedAgents": {"type": "array", "items": _ref("ManagedAgent")},
            "lastSeen": EPOCH_MS,
            "createdAt": EPOCH_MS,
        },
    },
    "OrchestratorRegistration": {
        "type": "object",
        "required": ["id", "hostname", "baseDir"],
        "properties": {
            "id": ID,
            "hostname": NAME,
            "baseDir": {"type": "string", "maxLength": 4096, "description": "Absolute path."},
            "providers": {
                "type": "array",
                "items": {"enum": list(PROVIDERS)},
                "minItems": 1,
                "default": list(PROVIDERS),
            },
            "envKeys": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "maxItems": 1000,
            },
            "meta": {"type": "object"},
        },
    },
    "SpawnRequest": {
        "type": "object",
        "required": ["provider"],
        "properties": {
            "provider": {"enum": list(PROVIDERS)},
            "cwd": {
                "type": "string",
                "maxLength": 4096,
                "description": "Inside the orchestrator's baseDir (by path components); "
                "relative paths are taken from baseDir; defaults to baseDir.",
            },
            "label": NAME,
            "approvalMode": {"enum": list(APPROVAL_MODES), "default": "guarded"},
            "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS},
        },
    },
    "ActionRequest": {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"enum": ["restart", "shutdown"]},
            "agentId": {**ID, "description": "Omit for all of its managed agents."},
        },
    },
    "CommandResultRequest": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["done", "failed"]},
            "error": {"type": "string", "maxLength": 4000},
            "agentId": ID,
        },
    },
    "Command": {
        "type": "object",
        "required": ["id", "orchestratorId", "kind", "status", "requestedAt", "requestedBy"],
        "properties": {
            "id": STR,
            "orchestratorId": ID,
            "kind": {"enum": ["spawn", "restart", "shutdown"]},
            "status": {"enum": ["pending", "done", "failed"]},
            "requestedAt": EPOCH_MS,
            "requestedBy": STR,
            "provider": STR,
            "cwd": STR,
            "label": NULLABLE_STR,
            "approvalMode": STR,
            "prompt": NULLABLE_STR,
            "action": STR,
            "agentId": NULLABLE_STR,
            "result": {
                "type": "object",
                "properties": {
                    "status": {"enum": ["done", "failed"]},
                    "error": NULLABLE_STR,
                    "agentId": NULLABLE_STR,
                    "at": EPOCH_MS,
                },
            },
        },
    },
    "LogEvent": {
        "type": "object",
        "required": ["position", "type", "entityId", "at", "data"],
        "properties": {
            "position": {"type": "integer"},
            "type": {"type": "string", "description": "The stored event's name."},
            "entityId": NULLABLE_STR,
            "entityKind": {"enum": ["agent", "orchestrator", "message", None]},
            "at": EPOCH_MS,
            "data": {"type": "object"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "generatedAt", "checks"],
        "properties": {
            "status": {"enum": ["ok", "warn", "error"]},
            "version": STR,
            "generatedAt": EPOCH_MS,
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "status", "detail"],
                    "properties": {
                        "name": STR,
                        "status": {"enum": ["ok", "warn", "error"]},
                        "detail": STR,
                    },
                },
            },
        },
    },
    "ReapResult": {
        "type": "object",
        "required": [
            "ok", "reapedAgentIds", "reapedOrchestratorIds",
            "releasedMessageIds", "releasedTaskIds",
        ],
        "properties": {
            "ok": {"const": True},
            "reapedAgentIds": {"type": "array", "items": STR},
            "reapedOrchestratorIds": {"type": "array", "items": STR},
            "releasedMessageIds": {"type": "array", "items": STR},
            "releasedTaskIds": {"type": "array", "items": STR},
        },
    },
}

_SPAWN_ACCEPTED = {
    "type": "object",
    "required": ["ok", "orchestratorId", "command"],
    "properties": {
        "ok": {"const": True},
        "orchestratorId": ID,
        "provider": STR,
        "command": _ref("Command"),
    },
}

PATHS: dict[str, Any] = {
    "/api/health": {
        "get": {
            "summary": "Health of the store, the writer, the read models and the reaper. "
            "Never needs a token.",
            "responses": {"200": _ok(_ref("Health"))},
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document.",
            "responses": {"200": _ok({"type": "object"})},
        }
    },
    "/api/log": {
        "get": _op(
            "The raw domain events after a position, oldest first.",
            {
                "200": _ok(
                    {
                        "type": "object",
                        "required": ["events", "next"],
                        "properties": {
                            "events": {"type": "array", "items": _ref("LogEvent")},
                            "next": {
                                "type": "integer",
                                "description": "Pass as `after` for the next page.",
                            },
                        },
                    }
                ),
                "400": _err("after or limit out of range."),
            },
            parameters=[
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
        )
    },
    "/api/system/reap": {
        "post": _op(
            "Reap now: mark offline whatever has been silent longer than stale-after.",
            {"200": _ok(_ref("ReapResult"))},
        )
    },
    "/api/agents": {
        "post": _op(
            "Register an agent (again: updates it and sets it online).",
            {"201": _ok(_ref("Agent"), "Registered."), **BODY_ERRORS},
            requestBody=_body(_ref("AgentRegistration")),
        ),
        "get": _op(
            "All agents by id, orchestrators' own agent records included.",
            {
                "200": _ok({"type": "array", "items": _ref("Agent")}),
                "400": _err("Unknown status filter."),
            },
            parameters=[
                {"name": "status", "in": "query", "schema": {"enum": ["online", "offline"]}}
            ],
        ),
    },
    "/api/agents/spawn": {
        "post": _op(
            "Spawn on the first online orchestrator (by hostname) that offers the provider.",
            {
                "202": _ok(_SPAWN_ACCEPTED, "Command recorded."),
                **BODY_ERRORS,
                "409": _err("No online orchestrator offers the provider."),
            },
            requestBody=_body(_ref("SpawnRequest")),
        )
    },
    "/api/agents/{id}": {
        "get": _op(
            "One agent.",
            {"200": _ok(_ref("Agent")), "400": _err("Malformed id."), "404": _err("No such agent.")},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "Remove an agent.",
            {
                "200": _ok(_ref("Ok")),
                "400": _err("Malformed id."),
                "404": _err("No such agent."),
                "409": _err("The agent is an orchestrator's own record: remove the orchestrator."),
            },
            parameters=[PATH_ID],
        ),
    },
    "/api/agents/{id}/heartbeat": {
        "post": _op(
            "Proof of life; brings an offline agent back online.",
            {"200": _ok(_ref("Ok")), "400": _err("Malformed id."), "404": _err("No such agent.")},
            parameters=[PATH_ID],
        )
    },
    "/api/orchestrators": {
        "post": _op(
            "Register an orchestrator (again: updates it, sets it online, rotates its token).",
            {
                "201": _ok(
                    {
                        "allOf": [
                            _ref("Orchestrator"),
                            {
                                "type": "object",
                                "required": ["orchestratorToken"],
                                "properties": {
                                    "orchestratorToken": {
                                        "type": "string",
                                        "description": "Valid only for this orchestrator's "
                                        "own heartbeat, reports, commands and stream.",
                                    }
                                },
                            },
                        ]
                    },
                    "Registered.",
                ),
                **BODY_ERRORS,
            },
            requestBody=_body(_ref("OrchestratorRegistration")),
        ),
        "get": _op(
            "All orchestrators, sorted by hostname.",
            {"200": _ok({"type": "array", "items": _ref("Orchestrator")})},
        ),
    },
    "/api/orchestrators/{id}": {
        "get": _op(
            "One orchestrator.",
            {
                "200": _ok(_ref("Orchestrator")),
                "400": _err("Malformed id."),
                "404": _err("No such orchestrator."),
            },
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "Remove it and its agent record; its managed agents keep running on the host.",
            {
                "200": _ok(_ref("Ok")),
                "400": _err("Malformed id."),
                "404": _err("No such orchestrator."),
            },
            parameters=[PATH_ID],
        ),
    },
    "/api/orchestrators/{id}/heartbeat": {
        "post": _op(
            "Proof of life for the orchestrator and its agent record.",
            {
                "200": _ok(_ref("Ok")),
                "400": _err("Malformed id."),
                "404": _err("No such orchestrator (or it was removed)."),
            },
            parameters=[PATH_ID],
        )
    },
    "/api/orchestrators/{id}/agents": {
        "patch": _op(
            "Report the managed agents; the list replaces the previous one.",
            {
                "200": _ok(_ref("Orchestrator")),
                **BODY_ERRORS,
                "404": _err("No such orchestrator."),
            },
            parameters=[PATH_ID],
            requestBody=_body(
                {
                    "type": "object",
                    "required": ["agents"],
                    "properties": {
                        "agents": {
                            "type": "array", "items": _ref("ManagedAgent"), "maxItems": 1000
                        }
                    },
                }
            ),
        )
    },
    "/api/orchestrators/{id}/spawn": {
        "post": _op(
            "Ask the orchestrator to start an agent.",
            {
                "202": _ok(_SPAWN_ACCEPTED, "Command recorded."),
                **BODY_ERRORS,
                "404": _err("No such orchestrator."),
                "409": _err("The orchestrator is offline."),
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("SpawnRequest")),
        )
    },
    "/api/orchestrators/{id}/actions": {
        "post": _op(
            "Restart or shut down one managed agent, or all when agentId is omitted.",
            {
                "202": _ok(
                    {
                        "type": "object",
                        "required": ["ok", "action", "command"],
                        "properties": {
                            "ok": {"const": True},
                            "action": {"enum": ["restart", "shutdown"]},
                            "command": _ref("Command"),
                        },
                    },
                    "Command recorded.",
                ),
                **BODY_ERRORS,
                "404": _err("No such orchestrator or managed agent."),
                "409": _err("The orchestrator is offline."),
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("ActionRequest")),
        )
    },
    "/api/orchestrators/{id}/commands": {
        "get": _op(
            "That host's commands, oldest first.",
            {
                "200": _ok({"type": "array", "items": _ref("Command")}),
                "400": _err("Malformed id or unknown status filter."),
                "404": _err("No such orchestrator."),
            },
            parameters=[
                PATH_ID,
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"enum": ["pending", "done", "failed"]},
                },
            ],
        )
    },
    "/api/orchestrators/{id}/commands/{commandId}/result": {
        "post": _op(
            "Record a command's result; exactly one per command.",
            {
                "200": _ok(_ref("Command")),
                **BODY_ERRORS,
                "404": _err("No such orchestrator or command."),
                "409": _err("The command already has a result."),
            },
            parameters=[
                PATH_ID,
                {"name": "commandId", "in": "path", "required": True, "schema": ID},
            ],
            requestBody=_body(_ref("CommandResultRequest")),
        )
    },
    "/api/managed-agents": {
        "get": _op(
            "Every managed agent across hosts, with where it runs.",
            {
                "200": _ok(
                    {
                        "type": "array",
                        "items": {
                            "allOf": [
                                _ref("ManagedAgent"),
                                {
                                    "type": "object",
                                    "required": [
                                        "orchestratorId", "hostname", "orchestratorStatus"
                                    ],
                                    "properties": {
                                        "orchestratorId": ID,
                                        "hostname": STR,
                                        "orchestratorStatus": {"enum": ["online", "offline"]},
                                    },
                                },
                            ]
                        },
                    }
                )
            },
        )
    },
}


# Messaging (ADR 0010) keeps its part of the document in its own module.
SCHEMAS.update(openapi_messages.SCHEMAS)
PATHS.update(openapi_messages.PATHS)


# -- the log, live and past (relay.http.sse, relay.http.past) ------------------------

_POSITION = {"type": "integer", "minimum": 0}


def _log_op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, **COMMON_ERRORS},
        **extra,
    }


_TYPES = "^(agent|orchestrator)(,(agent|orchestrator))*$"
AT_PARAM = {
    "name": "at",
    "in": "query",
    "schema": _POSITION,
    "description": "Answer as of this log position (the read models after the event at it). "
    "Folded from the nearest in-memory anchor; the first question over a long log "
    "can take seconds, later ones at most 10,000 events of folding.",
}
for _path in ("/api/orchestrators", "/api/agents", "/api/managed-agents"):
    _get = PATHS[_path]["get"]
    _get.setdefault("parameters", []).append(AT_PARAM)
    _get["responses"].setdefault("400", _err("Malformed filter, or `at` is not a position in the log."))

_HISTORY = {
    "200": _ok(
        {
            "type": "object",
            "required": ["events", "next"],
            "properties": {
                "events": {"type": "array", "items": _ref("LogEvent")},
                "next": {"type": "integer", "description": "Pass as `after` for the next page."},
            },
        }
    ),
    "400": _err("Malformed id, after or limit."),
}
_PAGING = [
    {"name": "after", "in": "query", "schema": _POSITION},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
]
PATHS.update(
    {
        "/api/events": {
            "get": _log_op(
                "streamEvents",
                "The log's tail as Server-Sent Events. Each event has `id:` (its log position), "
                "an `event:` name (agent.status, agent.removed, orchestrator.status, "
                "orchestrator.removed, orchestrator.command) and the entity as JSON `data:`. "
                "Resuming with Last-Event-ID (which wins) or ?since= gives every event after "
                "that position once, in order, then the live tail without a seam. A comment "
                "arrives at least every --keepalive seconds; a stream that falls --sse-buffer "
                "bytes behind is ended (resume to continue).",
                {
                    "200": {
                        "description": "The stream (text/event-stream), until the client or the "
                        "relay ends it.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _err("Malformed since, Last-Event-ID, types or orchestrator."),
                    "409": _err(
                        "The resume position is after the newest position in the log, or older "
                        "than the oldest it still holds: reload and follow without one."
                    ),
                    "429": _err("Too many open streams from this client address."),
                },
                parameters=[
                    {"name": "since", "in": "query", "schema": _POSITION},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    {
                        "name": "types",
                        "in": "query",
                        "schema": {"type": "string", "pattern": _TYPES},
                        "description": "Comma-separated families: agent, orchestrator.",
                    },
                    {
                        "name": "orchestrator",
                        "in": "query",
                        "schema": ID,
                        "description": "Only this orchestrator's status events and commands.",
                    },
                    {
                        "name": "token",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "The token, for browsers' EventSource (cannot set headers).",
                    },
                ],
            )
        },
        "/api/orchestrators/{id}/history": {
            "get": _log_op(
                "getOrchestratorHistory",
                "One orchestrator's events (commands included), oldest first, paged.",
                {**_HISTORY, "404": _err("The orchestrator never appeared in the log.")},
                parameters=[PATH_ID, *_PAGING],
            )
        },
        "/api/agents/{id}/history": {
            "get": _log_op(
                "getAgentHistory",
                "One agent's events, oldest first, paged (an orchestrator's own agent: the "
                "orchestrator's events).",
                {**_HISTORY, "404": _err("The agent never appeared in the log.")},
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
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "relayToken": {"type": "apiKey", "in": "header", "name": "X-Agent-Relay-Token"},
            },
        },
        "security": [{}, {"bearer": []}, {"relayToken": []}],
        "paths": PATHS,
    }
