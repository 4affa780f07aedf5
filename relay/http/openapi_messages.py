"""The messaging part of the OpenAPI document (ADR 0010), merged by ``openapi.py``.

Prose only: the schemas are generated from relay.wire.shapes (ADR 0029) by
``openapi_parts``; ``openapi.py`` adds these paths to its own, so the served
document is one.
"""

from __future__ import annotations

from typing import Any

from relay.domain.message import MAX_FANOUT_BYTES
from relay.http.openapi_parts import array_of, err, ok, params, path_param, ref
from relay.http.openapi_parts import body as _body
from relay.wire import shapes as w


def _links(*operation_ids: str) -> dict[str, Any]:
    """Links from a message in a response to operations on it (stateful fuzzing follows them)."""
    return {
        op: {"operationId": op, "parameters": {"id": "$response.body#/id"}} for op in operation_ids
    }


_ON_MESSAGE = _links("getMessage", "claimMessage", "ackMessage", "releaseMessage", "deleteMessage")


AUTH_ERRORS = {
    "401": err("Missing or wrong token (when the relay has one)."),
    "403": err(
        "The token does not speak for this agent: an orchestrator token acts only as "
        "`orchestrator-<id>`, and only the admin token may delete; or a browser request from "
        "another site (`Origin`, `Sec-Fetch-Site`)."
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
    "503": err("The log cannot be written right now; nothing was recorded."),
}
PATH_ID = path_param("id")
MISSING = {"404": err("No such message.")}


def _op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["messages"],
        "responses": {**responses, **AUTH_ERRORS},
    }
    op.update(extra)
    return op


PATHS: dict[str, Any] = {
    "/api/messages": {
        "post": _op(
            "sendMessage",
            "Send a message to an agent, or broadcast it (`label:X`, `tag:X`, `*`): each "
            "recipient gets its own copy, all recorded in one transaction. A broadcast's "
            "recipients times the size of its body, subject and meta (as JSON) may be at most "
            f"{MAX_FANOUT_BYTES} bytes (413 above).",
            {
                "201": ok(
                    {"oneOf": [ref(w.Message), ref(w.Broadcast)]},
                    "Sent: the message, or for a broadcast the message once and its recipients.",
                    _ON_MESSAGE,
                ),
                **BODY_ERRORS,
                "413": err(
                    "Body over the limit (--max-body), or a broadcast whose recipients times its "
                    "size is over the fan-out limit."
                ),
                "404": err("`to` names no agent, or the broadcast matches none."),
            },
            requestBody=_body(w.MessageRequest),
        ),
        "get": _op(
            "listMessages",
            "Messages in send order, filtered; page with `after` = the previous answer's `next`.",
            {
                "200": ok(w.MessagePage),
                "400": err("A filter is malformed or out of range."),
            },
            parameters=params(w.MessagesQuery),
        ),
    },
    "/api/messages/{id}": {
        "get": _op(
            "getMessage",
            "One message (deleted ones too, with status deleted).",
            {"200": ok(w.Message), "400": err("Malformed id."), **MISSING},
            parameters=[PATH_ID],
        ),
        "delete": _op(
            "deleteMessage",
            "Delete a message: it leaves every inbox (a claim on it ends); the log keeps it.",
            {
                "200": ok(w.Ok),
                "400": err("Malformed id."),
                **MISSING,
                "409": err("Already deleted."),
                "503": err("The log cannot be written right now; nothing was recorded."),
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
                "200": ok(
                    ref(w.Message), "Claimed: `claimId` and `leaseUntil` are set.", _ON_MESSAGE
                ),
                **BODY_ERRORS,
                **MISSING,
                "409": err(
                    "Claimed by a live claim already, acked, deleted, or the claimant is not "
                    "the recipient."
                ),
            },
            parameters=[PATH_ID],
            requestBody=_body(w.ClaimRequest),
        )
    },
    "/api/messages/{id}/ack": {
        "post": _op(
            "ackMessage",
            "Complete the delivery; only the holder of a live claim may.",
            {
                "200": ok(w.Message, "Acked."),
                **BODY_ERRORS,
                **MISSING,
                "409": err(
                    "Not claimed, claimed by someone else or under another claim, the lease "
                    "has ended, already acked, or deleted."
                ),
            },
            parameters=[PATH_ID],
            requestBody=_body(w.ClaimHolder),
        )
    },
    "/api/messages/{id}/release": {
        "post": _op(
            "releaseMessage",
            "Give a claimed message back to the inbox; only the holder of a live claim may.",
            {
                "200": ok(w.Message, "Pending again."),
                **BODY_ERRORS,
                **MISSING,
                "409": err(
                    "Not claimed, claimed by someone else or under another claim, the lease "
                    "has ended, acked, or deleted."
                ),
            },
            parameters=[PATH_ID],
            requestBody=_body(w.ClaimHolder),
        )
    },
    "/api/agents/{id}/inbox": {
        "get": _op(
            "getInbox",
            "The agent's pending messages and those it has claimed: urgent first, then oldest.",
            {
                "200": ok(array_of(w.Message)),
                "400": err("Malformed id or limit."),
                "404": err("No such agent."),
            },
            parameters=[PATH_ID, *params(w.InboxQuery)],
        )
    },
}
