"""The messaging part of the OpenAPI document (ADR 0010), merged by ``openapi.py``.

Shares its id schema and response builders with the core document
(``openapi_parts``); ``openapi.py`` adds these schemas and paths to its own,
so the served document is one.
"""

from __future__ import annotations

from typing import Any

from relay.domain.message import (
    MAX_FANOUT_BYTES,
    MAX_LEASE_SECONDS,
    MESSAGE_TYPES,
    PRIORITIES,
    STATUSES,
)
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

NULLABLE_EPOCH_MS = {"type": ["integer", "null"]}
TARGET = {
    "anyOf": [
        ID,
        {"type": "string", "pattern": "^(label|tag):[^\\x00]{1,200}$"},
        {"const": "*"},
    ],
    "description": "An agent id (orchestrators' `orchestrator-<id>` included), `label:X` "
    "(every agent whose label is X), `tag:X` (every agent with tag X) or `*` (every agent). "
    "A broadcast never reaches its sender, includes offline agents, and is delivered to each "
    "recipient as its own message (ADR 0010).",
}


def _links(*operation_ids: str) -> dict[str, Any]:
    """Links from a message in a response to operations on it (stateful fuzzing follows them)."""
    return {
        op: {"operationId": op, "parameters": {"id": "$response.body#/id"}} for op in operation_ids
    }


_ON_MESSAGE = _links("getMessage", "claimMessage", "ackMessage", "releaseMessage", "deleteMessage")


AUTH_ERRORS = {
    "401": _err("Missing or wrong token (when the relay has one)."),
    "403": _err(
        "The token does not speak for this agent: an orchestrator token acts only as "
        "`orchestrator-<id>`, and only the admin token may delete; or a browser request from "
        "another site (`Origin`, `Sec-Fetch-Site`)."
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
    "503": _err("The log cannot be written right now; nothing was recorded."),
}
PATH_ID = {"name": "id", "in": "path", "required": True, "schema": ID}
MISSING = {"404": _err("No such message.")}


def _op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["messages"],
        "responses": {**responses, **AUTH_ERRORS},
    }
    op.update(extra)
    return op


_CLAIM_HOLDER = {
    "type": "object",
    "required": ["agentId"],
    "properties": {
        "agentId": ID,
        "claimId": {
            **ID,
            "description": "The claim you hold (from the claim's answer). Optional; when given "
            "it must still be the current claim, so an ack from an earlier claim of the same "
            "agent is refused.",
        },
    },
}

SCHEMAS: dict[str, Any] = {
    "Message": {
        "type": "object",
        "description": "One message in one agent's inbox. Status moves pending → claimed → "
        "acked, claimed → pending on release or when the lease ends, and any status → deleted.",
        "required": [
            "id", "seq", "from", "to", "recipient", "type", "subject", "body", "meta",
            "priority", "broadcastId", "status", "createdAt", "claimId", "claimedBy",
            "claimedAt", "leaseUntil", "claims", "lastRelease", "ackedAt", "ackedBy",
            "deletedAt", "deletedBy",
        ],
        "properties": {
            "id": {"type": "string"},
            "seq": {
                "type": "integer",
                "description": "The log position where it was sent: the order of messages and "
                "the `after` cursor of GET /api/messages.",
            },
            "from": {"type": "string"},
            "to": {"type": "string", "description": "The target as sent (`*`, `tag:X`, an id)."},
            "recipient": {"type": "string", "description": "The agent whose inbox holds it."},
            "type": {"enum": list(MESSAGE_TYPES)},
            "subject": NULLABLE_STR,
            "body": {"type": "string"},
            "meta": {
                "type": "object",
                "description": "As sent. `priority` (normal|urgent) orders the inbox; `delivery` "
                "is kept as given; `orchestratorControl` is set by the relay on the urgent system "
                "message that mirrors each spawn or action command: {action, commandId, provider, "
                "cwd, label, approvalMode, prompt, agentId, requestedBy, requestedAt}, plus worktree and "
                "resume on a spawn that asked for them and removeWorktree on such a shutdown.",
            },
            "priority": {"enum": list(PRIORITIES)},
            "broadcastId": {
                **NULLABLE_STR,
                "description": "Shared by every recipient's copy of one broadcast.",
            },
            "status": {"enum": list(STATUSES)},
            "createdAt": EPOCH_MS,
            "claimId": {**NULLABLE_STR, "description": "The current claim, while claimed."},
            "claimedBy": NULLABLE_STR,
            "claimedAt": NULLABLE_EPOCH_MS,
            "leaseUntil": {
                **NULLABLE_EPOCH_MS,
                "description": "The claim holds through this instant; after it the claim has "
                "ended (ack and release are refused) and it is released once.",
            },
            "claims": {"type": "integer", "description": "How many times it was claimed."},
            "lastRelease": {
                "type": ["object", "null"],
                "properties": {
                    "reason": {"enum": ["released", "expired"]},
                    "claimId": {"type": "string"},
                    "agentId": {"type": "string"},
                    "at": EPOCH_MS,
                },
            },
            "ackedAt": NULLABLE_EPOCH_MS,
            "ackedBy": NULLABLE_STR,
            "deletedAt": NULLABLE_EPOCH_MS,
            "deletedBy": NULLABLE_STR,
        },
    },
    "MessageRequest": {
        "type": "object",
        "required": ["from", "to", "body"],
        "properties": {
            "from": ID,
            "to": TARGET,
            "type": {"enum": list(MESSAGE_TYPES), "default": "message"},
            "subject": {"type": ["string", "null"], "maxLength": 1000, "pattern": NO_NUL},
            "body": {
                "type": "string",
                "pattern": NO_NUL,
                "description": "Up to the body limit of the request; no NUL characters.",
            },
            "meta": {
                "type": ["object", "null"],
                "properties": {"priority": {"enum": [*PRIORITIES, None]}},
                "description": "Kept as given; `orchestratorControl` is reserved for the relay. "
                + FREE_FORM_LIMITS,
                **MAX_DEPTH_EXTENSION,
            },
        },
    },
    "Broadcast": {
        "type": "object",
        "description": "The answer to a broadcast: the message as sent once, the number of "
        "recipients, and each recipient's copy id (the copies are in each inbox and in "
        "`GET /api/messages?broadcastId=`). The log stores the content once (ADR 0014).",
        "required": [
            "id", "broadcastId", "from", "to", "type", "body", "recipientCount", "recipients",
            "messageIds",
        ],
        "properties": {
            "id": {"type": "string", "description": "The broadcast id."},
            "broadcastId": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "type": {"enum": list(MESSAGE_TYPES)},
            "subject": {"type": ["string", "null"]},
            "body": {"type": "string"},
            "meta": {"type": "object"},
            "priority": {"enum": list(PRIORITIES)},
            "status": {"const": "pending"},
            "createdAt": {"type": "integer"},
            "recipientCount": {"type": "integer", "minimum": 1},
            "recipients": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The recipients' agent ids, sorted.",
            },
            "messageIds": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Each recipient's copy, in the order of `recipients`.",
            },
        },
    },
    "ClaimRequest": {
        "type": "object",
        "required": ["agentId"],
        "properties": {
            "agentId": {**ID, "description": "The claimant: must be the message's recipient."},
            "leaseSeconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_LEASE_SECONDS,
                "default": 60,
            },
        },
    },
    "ClaimHolder": _CLAIM_HOLDER,
}

PATHS: dict[str, Any] = {
    "/api/messages": {
        "post": _op(
            "sendMessage",
            "Send a message to an agent, or broadcast it (`label:X`, `tag:X`, `*`): each "
            "recipient gets its own copy, all recorded in one transaction. A broadcast's "
            "recipients times the size of its body, subject and meta (as JSON) may be at most "
            f"{MAX_FANOUT_BYTES} bytes (413 above).",
            {
                "201": _ok(
                    {"oneOf": [_ref("Message"), _ref("Broadcast")]},
                    "Sent: the message, or for a broadcast the message once and its recipients.",
                    _ON_MESSAGE,
                ),
                **BODY_ERRORS,
                "413": _err(
                    "Body over the limit (--max-body), or a broadcast whose recipients times its "
                    "size is over the fan-out limit."
                ),
                "404": _err("`to` names no agent, or the broadcast matches none."),
            },
            requestBody=_body(_ref("MessageRequest")),
        ),
        "get": _op(
            "listMessages",
            "Messages in send order, filtered; page with `after` = the previous answer's `next`.",
            {
                "200": _ok(
                    {
                        "type": "object",
                        "required": ["messages", "next"],
                        "properties": {
                            "messages": {"type": "array", "items": _ref("Message")},
                            "next": {
                                "type": ["integer", "null"],
                                "description": "Pass as `after` for the next page; null at the end.",
                            },
                        },
                    }
                ),
                "400": _err("A filter is malformed or out of range."),
            },
            parameters=[
                {
                    "name": "to",
                    "in": "query",
                    "schema": TARGET,
                    "description": "The recipient, or the target as sent.",
                },
                {"name": "from", "in": "query", "schema": ID},
                {"name": "status", "in": "query", "schema": {"enum": list(STATUSES)}},
                {"name": "type", "in": "query", "schema": {"enum": list(MESSAGE_TYPES)}},
                {"name": "broadcastId", "in": "query", "schema": ID},
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
        ),
    },
    "/api/messages/{id}": {
        "get": _op(
            "getMessage",
            "One message (deleted ones too, with status deleted).",
            {"200": _ok(_ref("Message")), "400": _err("Malformed id."), **MISSING},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "deleteMessage",
            "Delete a message: it leaves every inbox (a claim on it ends); the log keeps it.",
            {
                "200": _ok({"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}}),
                "400": _err("Malformed id."),
                **MISSING,
                "409": _err("Already deleted."),
                "503": _err("The log cannot be written right now; nothing was recorded."),
            },
            parameters=[PATH_ID],
        ),
    },
    "/api/messages/{id}/claim": {
        "post": _op(
            "claimMessage",
            "Claim a message for exclusive delivery until the lease ends; only its recipient "
            "may. A claim whose lease has ended is released first.",
            {
                "200": _ok(
                    _ref("Message"), "Claimed: `claimId` and `leaseUntil` are set.", _ON_MESSAGE
                ),
                **BODY_ERRORS,
                **MISSING,
                "409": _err(
                    "Claimed by a live claim already, acked, deleted, or the claimant is not "
                    "the recipient."
                ),
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("ClaimRequest")),
        )
    },
    "/api/messages/{id}/ack": {
        "post": _op(
            "ackMessage",
            "Complete the delivery; only the holder of a live claim may.",
            {
                "200": _ok(_ref("Message"), "Acked."),
                **BODY_ERRORS,
                **MISSING,
                "409": _err(
                    "Not claimed, claimed by someone else or under another claim, the lease "
                    "has ended, already acked, or deleted."
                ),
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("ClaimHolder")),
        )
    },
    "/api/messages/{id}/release": {
        "post": _op(
            "releaseMessage",
            "Give a claimed message back to the inbox; only the holder of a live claim may.",
            {
                "200": _ok(_ref("Message"), "Pending again."),
                **BODY_ERRORS,
                **MISSING,
                "409": _err(
                    "Not claimed, claimed by someone else or under another claim, the lease "
                    "has ended, acked, or deleted."
                ),
            },
            parameters=[PATH_ID],
            requestBody=_body(_ref("ClaimHolder")),
        )
    },
    "/api/agents/{id}/inbox": {
        "get": _op(
            "getInbox",
            "The agent's pending messages and those it has claimed: urgent first, then oldest.",
            {
                "200": _ok({"type": "array", "items": _ref("Message")}),
                "400": _err("Malformed id or limit."),
                "404": _err("No such agent."),
            },
            parameters=[
                PATH_ID,
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
            ],
        )
    },
}
