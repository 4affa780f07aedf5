"""The OpenAPI 3 document the relay serves at ``/api/openapi.json``.

Written by hand beside the routes (not generated) so that it can say what the
code cannot: limits, error cases, and why. A test checks that every route the
application registers appears here, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from relay import __version__
from relay.domain.rules import (
    APPROVAL_MODES,
    DEFAULT_APPROVAL_MODE,
    MAX_ID_CHARS,
    MAX_ORCHESTRATOR_ID_CHARS,
    MAX_PROMPT_CHARS,
    ORCHESTRATOR_AGENT_PREFIX,
    PROVIDERS,
)
from relay.http import openapi_messages, openapi_output, openapi_tokens
from relay.http.openapi_parts import (
    EPOCH_MS,
    FREE_FORM_LIMITS,
    ID,
    MAX_DEPTH_EXTENSION,
    NO_NUL,
    NULLABLE_STR,
)
from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err as _err
from relay.http.openapi_parts import ok as _ok
from relay.http.openapi_parts import ref as _ref

STR = {"type": "string"}
NAME = {"type": "string", "maxLength": 200}


def _text(max_len: int) -> dict[str, Any]:
    """An optional text field: null means absent; NUL characters are refused."""
    return {"type": ["string", "null"], "maxLength": max_len, "pattern": NO_NUL}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (the relay reads null as "not given")."""
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {**schema, "type": [schema["type"], "null"]}


OPT_NAME = _text(200)
OPT_PATH = _text(4096)
OPT_ID = _nullable(ID)
OPT_COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": 2**53 - 1}
OPT_OBJECT = {
    "type": ["object", "null"],
    "description": "Free-form; null means {}. " + FREE_FORM_LIMITS,
    **MAX_DEPTH_EXTENSION,
}
PROVIDER = {"enum": list(PROVIDERS)}
APPROVAL_MODE = {"enum": list(APPROVAL_MODES), "default": DEFAULT_APPROVAL_MODE}
HOSTNAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$",
    "description": "Not blank.",
}
ORCHESTRATOR_ID = {
    **ID,
    "maxLength": MAX_ORCHESTRATOR_ID_CHARS,
    "description": f"1-{MAX_ORCHESTRATOR_ID_CHARS} printable characters without '/' or "
    f"whitespace: an orchestrator is also the agent {ORCHESTRATOR_AGENT_PREFIX}<id>, and that "
    f"id must fit the {MAX_ID_CHARS}-character limit of every id.",
}
TMUX_SESSION = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$",
    "description": "The tmux session the agent runs in (socket relay); not blank.",
}
BASE_DIR = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
    "pattern": "^/[^\\x00]*$",
    "description": "Absolute path; stored normalised.",
}


def _link(operation_id: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters}


COMMON_ERRORS = {
    "401": _err(
        "Missing or wrong token (when the relay has an admin token), or any token the relay "
        "does not know.",
        {"WWW-Authenticate": {"schema": STR}},
    ),
    "403": _err(
        "An orchestrator token used outside that orchestrator's own resources, or a browser "
        "request from another site (`Origin`, `Sec-Fetch-Site`)."
    ),
    "421": _err(
        "A relay without an admin token answers only loopback Host names and --public-url's."
    ),
}
BODY_ERRORS = {
    "400": _err("Invalid input; the message names the field."),
    "408": _err("The body did not arrive within --client-timeout."),
    "413": _err("Body over the limit (--max-body, default 1 MiB)."),
    "415": _err("Body is not JSON."),
}
WRITE_ERRORS = {
    "503": _err("The log cannot be written right now (disk full, read-only); nothing was recorded."),
}
PATH_ID = {"name": "id", "in": "path", "required": True, "schema": ID}
OPTIONAL_BODY = _body(
    {"type": "object", "description": "Ignored; if sent, it must be a JSON object."}, required=False
)


def _op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**COMMON_ERRORS, **responses},  # an operation may say more about 401/403
    }
    op.update(extra)
    return op


_STR_ITEMS = {"type": "string", "minLength": 1, "maxLength": 100}
_DEADLINE = {
    "type": ["integer", "null"],
    "minimum": 1,
    "description": "Seconds until the command expires; the relay's --command-deadline is both "
    "the default and the most (a longer ask gets it).",
}
_MANAGED_AGENT_PROPERTIES = {
    "agentId": ID,
    "provider": PROVIDER,
    "tmuxSession": STR,
    "cwd": STR,
    "label": STR,
    "approvalMode": {"enum": list(APPROVAL_MODES)},
    "pid": {"type": "integer", "minimum": 0},
    "startedAt": EPOCH_MS,
    "state": {
        "enum": ["running", "unknown", "lost"],
        "description": "running: reported by an online host; unknown: its host is offline "
        "(for up to --lost-after); lost: its host has been offline longer. A host that "
        "comes back and reports returns its agents to running, with no respawn.",
    },
}
_EXIT_CODE = {"type": ["integer", "null"], "minimum": 0, "maximum": 255}
_AT = {"type": "integer", "minimum": 0, "maximum": 2**53 - 1, "description": "Epoch milliseconds."}
_CRASH_PROPERTIES = {
    "restarts": {
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": 10000,
        "description": "Restarts the host made after the agent exited with a failure, within "
        "its --restart-window.",
    },
    "lastExit": {
        "type": ["object", "null"],
        "required": ["at"],
        "properties": {"status": _EXIT_CODE, "signal": _EXIT_CODE, "at": _AT},
        "description": "How the agent's program last ended (exit status, or the signal).",
    },
    "crashloop": {
        "type": ["object", "null"],
        "required": ["at", "restarts"],
        "properties": {
            "exitStatus": _EXIT_CODE,
            "signal": _EXIT_CODE,
            "restarts": {"type": "integer", "minimum": 0, "maximum": 10000},
            "at": _AT,
        },
        "description": "Present when the host gave up: the agent exited with a failure after "
        "--restart-max restarts within --restart-window, so it is not restarted again until "
        "an operator's restart command. Its last exit status or signal says why.",
    },
}
_MANAGED_AGENT_PROPERTIES.update(_CRASH_PROPERTIES)
_LABELS = {
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": 100},
    "maxProperties": 32,
    "propertyNames": {"minLength": 1, "maxLength": 100},
    "description": "Labels of a host, matched exactly by a spawn's selector.",
}
_LOAD = {
    "type": "object",
    "required": ["activeAgents"],
    "properties": {
        "activeAgents": {"type": "integer", "minimum": 0, "maximum": 100000},
        "cpu": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1e6,
            "description": "Load, e.g. the 1-minute load average.",
        },
        "memory": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1,
            "description": "Fraction in use.",
        },
    },
}

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
        "description": "Unknown fields are ignored; null means not given.",
        "properties": {
            "id": {
                **ID,
                "not": {"pattern": f"^{ORCHESTRATOR_AGENT_PREFIX}"},
                "description": ID["description"]
                + f" Ids starting with {ORCHESTRATOR_AGENT_PREFIX!r} belong to orchestrators.",
            },
            "name": {**OPT_NAME, "description": "Defaults to the id."},
            "label": OPT_NAME,
            "tags": {"type": ["array", "null"], "items": _STR_ITEMS, "maxItems": 64},
            "machine": OPT_NAME,
            "capabilities": {"type": ["array", "null"], "items": _STR_ITEMS, "maxItems": 64},
            "meta": OPT_OBJECT,
        },
    },
    "ManagedAgent": {
        "type": "object",
        "required": ["agentId", "provider", "tmuxSession", "cwd", "approvalMode", "startedAt"],
        "properties": _MANAGED_AGENT_PROPERTIES,
    },
    "ManagedAgentReport": {
        "type": "object",
        "required": ["agentId", "provider", "tmuxSession"],
        "description": "One agent the host runs; agentIds are unique within a report.",
        "properties": {
            "agentId": ID,
            "provider": PROVIDER,
            "tmuxSession": TMUX_SESSION,
            "cwd": {
                **OPT_PATH,
                "description": "Inside the orchestrator's baseDir (compared component by "
                "component, as for a spawn); a report naming a cwd outside it is 400.",
            },
            "label": OPT_NAME,
            "approvalMode": _nullable(APPROVAL_MODE),
            "pid": OPT_COUNT,
            "startedAt": {**OPT_COUNT, "description": "Epoch ms; defaults to the report's time."},
            **_CRASH_PROPERTIES,
        },
    },
    "ManagedAgentsReport": {
        "type": "object",
        "required": ["agents"],
        "properties": {
            "agents": {
                "type": "array",
                "items": _ref("ManagedAgentReport"),
                "maxItems": 1000,
                "uniqueItems": True,
                "description": "Replaces the previous list; an agentId listed twice is 400.",
            }
        },
    },
    "Orchestrator": {
        "type": "object",
        "required": [
            "id", "hostname", "status", "agentId", "providers", "baseDir", "envKeys",
            "meta", "managedAgents", "lastSeen", "createdAt",
        ],
        "properties": {
            "id": ORCHESTRATOR_ID,
            "hostname": STR,
            "status": {"enum": ["online", "offline"]},
            "agentId": {**ID, "description": f"{ORCHESTRATOR_AGENT_PREFIX}<id>"},
            "providers": {"type": "array", "items": PROVIDER},
            "baseDir": STR,
            "envKeys": {"type": "array", "items": STR, "description": "Names only, never values."},
            "meta": {"type": "object"},
            "managedAgents": {"type": "array", "items": _ref("ManagedAgent")},
            "lastSeen": EPOCH_MS,
            "createdAt": EPOCH_MS,
            "maxAgents": {"type": ["integer", "null"], "minimum": 1},
            "labels": _LABELS,
            "load": {**_LOAD, "type": ["object", "null"]},
            "activeAgents": {
                "type": "integer",
                "minimum": 0,
                "description": "The last heartbeat's load.activeAgents, else the reported agents.",
            },
            "offlineSince": {
                "type": ["integer", "null"],
                "description": "Epoch ms it was last reaped (null: never).",
            },
            "agentsLostAt": {
                "type": ["integer", "null"],
                "description": "Epoch ms its managed agents were declared lost (offline longer "
                "than --lost-after); null while it is online.",
            },
        },
    },
    "OrchestratorRegistration": {
        "type": "object",
        "required": ["id", "hostname", "baseDir"],
        "description": "Unknown fields are ignored; null means not given.",
        "properties": {
            "id": ORCHESTRATOR_ID,
            "hostname": HOSTNAME,
            "baseDir": BASE_DIR,
            "providers": {
                "type": ["array", "null"],
                "items": PROVIDER,
                "minItems": 1,
                "maxItems": len(PROVIDERS),
                "default": list(PROVIDERS),
            },
            "envKeys": {
                "type": ["array", "null"],
                "items": {"type": "string", "maxLength": 256, "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "maxItems": 1000,
                "description": "Names of environment variables, never values ('K=V' is refused).",
            },
            "meta": OPT_OBJECT,
            "maxAgents": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": 100000,
                "description": "Agents this host runs at most; spawns beyond it are 409.",
            },
            "labels": {**_LABELS, "type": ["object", "null"]},
        },
    },
    "Heartbeat": {
        "type": "object",
        "description": "Optional body of an orchestrator heartbeat.",
        "properties": {"load": {**_LOAD, "type": ["object", "null"]}},
    },
    "SpawnRequest": {
        "type": "object",
        "required": ["provider"],
        "description": "Unknown fields are ignored; null means not given.",
        "properties": {
            "provider": PROVIDER,
            "cwd": {
                **OPT_PATH,
                "description": "Inside the orchestrator's baseDir (by path components); "
                "relative paths are taken from baseDir; defaults to baseDir.",
            },
            "label": OPT_NAME,
            "approvalMode": _nullable(APPROVAL_MODE),
            "prompt": _text(MAX_PROMPT_CHARS),
            "selector": {
                **_LABELS,
                "type": ["object", "null"],
                "description": "POST /api/agents/spawn only: labels the chosen host must have.",
            },
            "deadlineSeconds": _DEADLINE,
        },
    },
    "ActionRequest": {
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"enum": ["restart", "shutdown"]},
            "agentId": {**OPT_ID, "description": "A managed agent's id; omit for all of them."},
            "deadlineSeconds": _DEADLINE,
        },
    },
    "CommandProgressRequest": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {
                "const": "running",
                "description": "The host started the command (so a slow start is not a lost one).",
            }
        },
    },
    "CommandResultRequest": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["done", "failed"]},
            "error": _text(4000),
            "agentId": OPT_ID,
        },
    },
    "Command": {
        "type": "object",
        "required": ["id", "orchestratorId", "kind", "status", "requestedAt", "requestedBy"],
        "properties": {
            "id": STR,
            "orchestratorId": ID,
            "kind": {"enum": ["spawn", "restart", "shutdown"]},
            "status": {"enum": ["pending", "running", "done", "failed", "expired"]},
            "requestedAt": EPOCH_MS,
            "deadlineAt": {
                "type": ["integer", "null"],
                "description": "Epoch ms; pending or running past it, the command expires.",
            },
            "startedAt": EPOCH_MS,
            "expired": {
                "type": "object",
                "required": ["reason", "at"],
                "properties": {
                    "reason": {"enum": ["deadline passed", "orchestrator offline"]},
                    "at": EPOCH_MS,
                },
            },
            "requestedBy": {
                "type": "string",
                "description": "'operator' (the admin token, or no token on a loopback relay) "
                "or 'orchestrator:<id>'.",
            },
            "provider": PROVIDER,
            "cwd": STR,
            "label": NULLABLE_STR,
            "approvalMode": {"enum": list(APPROVAL_MODES)},
            "prompt": NULLABLE_STR,
            "action": {"enum": ["restart", "shutdown"]},
            "agentId": NULLABLE_STR,
            "result": {
                "type": "object",
                "required": ["status", "error", "agentId", "at"],
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
            "position": {"type": "integer", "minimum": 1},
            "type": {"type": "string", "description": "The stored event's name."},
            "entityId": NULLABLE_STR,
            "entityKind": {"enum": ["agent", "orchestrator", "message", "broadcast", None]},
            "at": EPOCH_MS,
            "data": {"type": "object", "description": "The event's fields; never token hashes."},
        },
    },
    "PresenceInterval": {
        "type": "object",
        "description": "One entity's run of heartbeats, as kept after thinning: every heartbeat "
        "between firstPosition and lastPosition of that entity, none of them kept whole.",
        "required": [
            "type", "entityId", "entityKind", "firstPosition", "lastPosition",
            "count", "firstAt", "lastAt", "longestGapMs",
        ],
        "properties": {
            "type": {"enum": ["AgentHeartbeatReceived", "OrchestratorHeartbeatReceived"]},
            "entityId": NULLABLE_STR,
            "entityKind": {"enum": ["agent", "orchestrator", None]},
            "firstPosition": {"type": "integer", "minimum": 1},
            "lastPosition": {"type": "integer", "minimum": 1},
            "count": {"type": "integer", "minimum": 1, "description": "Heartbeats in the run."},
            "firstAt": EPOCH_MS,
            "lastAt": EPOCH_MS,
            "longestGapMs": {
                "type": "integer",
                "minimum": 0,
                "description": "The longest silence between two heartbeats of the run.",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "generatedAt", "checks"],
        "properties": {
            "status": {
                "enum": ["ok", "warn", "degraded", "error"],
                "description": "degraded: the reaper is suspended (mass outage); still HTTP 200.",
            },
            "version": STR,
            "generatedAt": EPOCH_MS,
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "status", "detail"],
                    "properties": {
                        "name": STR,
                        "status": {"enum": ["ok", "warn", "suspended", "error"]},
                        "detail": STR,
                        "urls": {
                            "type": "array",
                            "items": {"type": "object"},
                            "description": "The notifier check only (with --notify-url): each URL "
                            "(scheme, host and port), its key, position, lag, delivered, failures "
                            "and lastError; warn when one is more than 100 positions behind or failing.",
                        },
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
            "expiredCommandIds": {"type": "array", "items": STR},
            "lostOrchestratorIds": {
                "type": "array",
                "items": STR,
                "description": "Hosts offline longer than --lost-after: their agents are now lost.",
            },
            "suspended": {"type": "boolean", "description": "The reaper is suspended (mass outage)."},
        },
    },
}

_SPAWN_ACCEPTED = {
    "type": "object",
    "required": ["ok", "orchestratorId", "command"],
    "properties": {
        "ok": {"const": True},
        "orchestratorId": ID,
        "provider": PROVIDER,
        "command": _ref("Command"),
    },
}
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
_BAD_ID = {"400": _err("Malformed id.")}

PATHS: dict[str, Any] = {
    "/api/health": {
        "get": {
            "operationId": "health",
            "summary": "Health of the store, the writer, the read models, the reaper and the "
            "notifier. "
            "Never needs a token.",
            "security": [],
            "responses": {"200": _ok(_ref("Health"))},
        }
    },
    "/api/openapi.json": {
        "get": _op("openapi", "This document.", {"200": _ok({"type": "object"})})
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
                "200": _ok(
                    {
                        "type": "object",
                        "required": ["events", "next", "intervals"],
                        "properties": {
                            "events": {"type": "array", "items": _ref("LogEvent")},
                            "next": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "Pass as `after` for the next page.",
                            },
                            "intervals": {
                                "type": "array",
                                "items": _ref("PresenceInterval"),
                                "description": "Thinned heartbeat runs that start after `after` "
                                "and at or before `next` (empty where nothing was thinned).",
                            },
                        },
                    }
                ),
                "400": _err("after or limit out of range, not an integer, or given twice."),
            },
            parameters=[
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0},
                },
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
            "reap",
            "Reap now: mark offline whatever has been silent longer than stale-after. "
            "While the reaper is suspended (a mass outage: see /api/health) nothing is "
            "reaped unless force=true.",
            {"200": _ok(_ref("ReapResult")), **BODY_ERRORS, **WRITE_ERRORS},
            requestBody=OPTIONAL_BODY,
            parameters=[
                {
                    "name": "force",
                    "in": "query",
                    "schema": {"enum": ["true", "false"], "default": "false"},
                    "description": "true: reap once whatever the mass-outage brake says.",
                }
            ],
        )
    },
    "/api/agents": {
        "post": _op(
            "registerAgent",
            "Register an agent (again: updates it and sets it online).",
            {
                "201": _ok(_ref("Agent"), "Registered.", _AGENT_LINKS),
                **BODY_ERRORS,
                **WRITE_ERRORS,
            },
            requestBody=_body(_ref("AgentRegistration")),
        ),
        "get": _op(
            "listAgents",
            "All agents by id, orchestrators' own agent records included.",
            {
                "200": _ok({"type": "array", "items": _ref("Agent")}),
                "400": _err("Unknown status filter, or given twice."),
            },
            parameters=[
                {"name": "status", "in": "query", "schema": {"enum": ["online", "offline"]}}
            ],
        ),
    },
    "/api/agents/spawn": {
        "post": _op(
            "spawnAnywhere",
            "Spawn on the first online orchestrator (by hostname) that offers the provider.",
            {
                "202": _ok(_SPAWN_ACCEPTED, "Command recorded.", _COMMAND_LINKS),
                **BODY_ERRORS,
                "400": _err(
                    "Invalid input, or the chosen orchestrator refuses it (cwd outside its "
                    "baseDir); the message names the field."
                ),
                "409": _err(
                    "No online orchestrator offers the provider (online: not marked offline, "
                    "and heard from within --stale-after)."
                ),
                **WRITE_ERRORS,
            },
            requestBody=_body(_ref("SpawnRequest")),
        )
    },
    "/api/agents/{id}": {
        "get": _op(
            "getAgent",
            "One agent.",
            {"200": _ok(_ref("Agent")), **_BAD_ID, "404": _err("No such agent.")},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "removeAgent",
            "Remove an agent.",
            {
                "200": _ok(_ref("Ok")),
                **_BAD_ID,
                "404": _err("No such agent."),
                "409": _err("The agent is an orchestrator's own record: remove the orchestrator."),
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
                "200": _ok(_ref("Ok")),
                **BODY_ERRORS,
                "404": _err("No such agent."),
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
                                        "minLength": 32,
                                        "description": "Valid only for this orchestrator's "
                                        "own heartbeat, reports, commands and stream, until it "
                                        "registers again or is removed. Shown once; the relay "
                                        "keeps only its SHA-256.",
                                    }
                                },
                            },
                        ]
                    },
                    "Registered.",
                    _ORCHESTRATOR_LINKS,
                ),
                **BODY_ERRORS,
                **WRITE_ERRORS,
                "403": _err(
                    "An orchestrator token registering another id, or widening its baseDir "
                    "beyond the one an admin granted; nothing is recorded."
                ),
            },
            requestBody=_body(_ref("OrchestratorRegistration")),
        ),
        "get": _op(
            "listOrchestrators",
            "All orchestrators, sorted by hostname.",
            {"200": _ok({"type": "array", "items": _ref("Orchestrator")})},
        ),
    },
    "/api/orchestrators/{id}": {
        "get": _op(
            "getOrchestrator",
            "One orchestrator.",
            {"200": _ok(_ref("Orchestrator")), **_BAD_ID, "404": _err("No such orchestrator.")},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "removeOrchestrator",
            "Remove it and its agent record (its token stops working); its managed agents keep "
            "running on the host.",
            {
                "200": _ok(_ref("Ok")),
                **_BAD_ID,
                "404": _err("No such orchestrator."),
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
                "200": _ok(_ref("Ok")),
                **BODY_ERRORS,
                "404": _err("No such orchestrator (or it was removed)."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody={"required": False, "content": {"application/json": {"schema": _ref("Heartbeat")}}},
        )
    },
    "/api/orchestrators/{id}/agents": {
        "patch": _op(
            "reportManagedAgents",
            "Report the managed agents; the list replaces the previous one. Its own token suffices.",
            {
                "200": _ok(_ref("Orchestrator")),
                **BODY_ERRORS,
                "404": _err("No such orchestrator."),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("ManagedAgentsReport")),
        )
    },
    "/api/orchestrators/{id}/spawn": {
        "post": _op(
            "spawnOn",
            "Ask the orchestrator to start an agent.",
            {
                "202": _ok(_SPAWN_ACCEPTED, "Command recorded.", _COMMAND_LINKS),
                **BODY_ERRORS,
                "400": _err(
                    "Invalid input, a provider it does not offer, or a cwd outside its baseDir; "
                    "the message names the field."
                ),
                "404": _err("No such orchestrator."),
                "409": _err(
                    "The orchestrator is offline: marked so, or silent for longer than "
                    "--stale-after though not yet reaped."
                ),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("SpawnRequest")),
        )
    },
    "/api/orchestrators/{id}/actions": {
        "post": _op(
            "requestAction",
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
                    {
                        "RecordTheResult": _link(
                            "recordCommandResult",
                            id="$request.path.id",
                            commandId="$response.body#/command/id",
                        )
                    },
                ),
                **BODY_ERRORS,
                "404": _err("No such orchestrator or managed agent."),
                "409": _err(
                    "The orchestrator is offline: marked so, or silent for longer than "
                    "--stale-after though not yet reaped."
                ),
                **WRITE_ERRORS,
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("ActionRequest")),
        )
    },
    "/api/orchestrators/{id}/commands": {
        "get": _op(
            "listCommands",
            "That host's commands, oldest first. Its own token suffices.",
            {
                "200": _ok({"type": "array", "items": _ref("Command")}),
                "400": _err("Malformed id, or an unknown or repeated status filter."),
                "404": _err("No such orchestrator."),
            },
            parameters=[
                PATH_ID,
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"enum": ["pending", "running", "done", "failed", "expired"]},
                },
            ],
        )
    },
    "/api/orchestrators/{id}/commands/{commandId}/progress": {
        "post": _op(
            "recordCommandProgress",
            "The host started the command: it becomes running (again: no-op). Refused once "
            "the command is over or past its deadline, so a host never starts it late. Its "
            "own token suffices.",
            {
                "200": _ok(_ref("Command")),
                **BODY_ERRORS,
                "404": _err("No such orchestrator or command."),
                "409": _err("The command is over, or past its deadline."),
                **WRITE_ERRORS,
            },
            parameters=[
                PATH_ID,
                {"name": "commandId", "in": "path", "required": True, "schema": ID},
            ],
            requestBody=_body(_ref("CommandProgressRequest")),
        )
    },
    "/api/orchestrators/{id}/commands/{commandId}/result": {
        "post": _op(
            "recordCommandResult",
            "Record a command's result; exactly one per command. Its own token suffices.",
            {
                "200": _ok(_ref("Command")),
                **BODY_ERRORS,
                "404": _err("No such orchestrator or command."),
                "409": _err("The command already has a result, or expired."),
                **WRITE_ERRORS,
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
            "listManagedAgents",
            "Every managed agent across hosts, with where it runs; ?state= filters.",
            {
                "200": _ok(
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": [
                                *SCHEMAS["ManagedAgent"]["required"],
                                "orchestratorId", "hostname", "orchestratorStatus",
                            ],
                            "properties": {
                                **_MANAGED_AGENT_PROPERTIES,
                                "orchestratorId": ID,
                                "hostname": STR,
                                "orchestratorStatus": {"enum": ["online", "offline"]},
                            },
                        },
                    }
                ),
                "400": _err("Unknown state filter, or given twice."),
            },
            parameters=[
                {
                    "name": "state",
                    "in": "query",
                    "schema": {"enum": ["running", "unknown", "lost"]},
                }
            ],
        )
    },
}


# Messaging (ADR 0010) keeps its part of the document in its own module.
SCHEMAS.update(openapi_messages.SCHEMAS)
PATHS.update(openapi_messages.PATHS)
SCHEMAS.update(openapi_tokens.SCHEMAS)
PATHS.update(openapi_tokens.PATHS)
SCHEMAS.update(openapi_output.SCHEMAS)
PATHS.update(openapi_output.PATHS)


# -- the log, live and past (relay.http.sse, relay.http.past) ------------------------

_POSITION = {"type": "integer", "minimum": 0, "maximum": 2**62}
# An SSE event id: a log position, or P.K for an event before the position's last (ADR 0007).
_EVENT_ID = {"type": "string", "pattern": r"^[0-9]{1,18}(\.[0-9]{1,9})?$"}


def _log_op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**COMMON_ERRORS, **responses},  # an operation may say more about 401/403
        **extra,
    }


_TYPES = "^(agent|orchestrator|message|system)(,(agent|orchestrator|message|system))*$"
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
                "The log's tail as Server-Sent Events. Each event has an `event:` name "
                "(agent.status, agent.removed, orchestrator.status, orchestrator.removed, "
                "orchestrator.command, message.*), the entity as JSON `data:` and an `id:` of "
                "its own that increases: a log position can carry several events, so the last "
                "event of position P has the id `P` and the earlier ones `P.0`, `P.1`, ... (K "
                "counts all of P's events, so ids are the same under every filter). Resuming "
                "with Last-Event-ID (which wins) or ?since= gives every event after that id "
                "once, in order, then the live tail without a seam: `P` means all of P was "
                "received, `P.K` resumes with the event after P.K. A comment "
                "arrives at least every --keepalive seconds; a stream that falls --sse-buffer "
                "bytes behind is ended (resume to continue). An ?orchestrator= stream also gets "
                "`orchestrator.watch` frames (OutputWatch data, no id: not log events) telling "
                "that host which of its agents someone watches live.",
                {
                    "200": {
                        "description": "The stream (text/event-stream), until the client or the "
                        "relay ends it.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _err("Malformed since, Last-Event-ID, types or orchestrator."),
                    "409": _err(
                        "The resume position is after the newest position in the log, or older "
                        "than the oldest it still holds, or `P.K` names no event of position P: "
                        "reload and follow without one."
                    ),
                    "429": _err("Too many open streams from this client address."),
                },
                parameters=[
                    {
                        "name": "since",
                        "in": "query",
                        "schema": _EVENT_ID,
                        "description": "An event id to resume after (as Last-Event-ID): `P` or `P.K`.",
                    },
                    {"name": "Last-Event-ID", "in": "header", "schema": _EVENT_ID},
                    {
                        "name": "types",
                        "in": "query",
                        "schema": {"type": "string", "pattern": _TYPES},
                        "description": "Comma-separated families (the part of the event "
                        "name before the dot): agent, orchestrator, message.",
                    },
                    {
                        "name": "orchestrator",
                        "in": "query",
                        "schema": ID,
                        "description": "Only this orchestrator's status events and commands.",
                    },
                    {
                        "name": "agent",
                        "in": "query",
                        "schema": ID,
                        "description": "Only this agent's own record and the messages to or from "
                        "it (not with `orchestrator`).",
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
