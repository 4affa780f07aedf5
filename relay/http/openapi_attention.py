"""The needs-input and answer part of the OpenAPI document (issue 16, ADR 0032, 0033).

The shapes are declared in relay.wire.shapes (``InputAction``,
``AttentionReport``, ``AttentionRecorded``, the attention fields of
``ManagedAgent``); here is what code cannot say: the operation, its statuses
and the stream's event. Kept together so the contract the dashboard builds its
needs-input queue on is read in one place; ``openapi.py`` merges it.
"""

from __future__ import annotations

from typing import Any

from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err, ok, path_param, ref
from relay.wire import shapes as w

PATHS: dict[str, Any] = {
    "/api/orchestrators/{id}/agents/{agentId}/attention": {
        "post": {
            "operationId": "reportAttention",
            "summary": "The host says whether a managed agent waits for a person: `input`, "
            "`idle`, or null (it moved on). Records AgentAwaitingInput or AgentInputResumed "
            "when that changes; a repeat records nothing (recorded: false). Its own token "
            "suffices.",
            "responses": {
                "200": ok(w.AttentionRecorded),
                "400": err("Invalid input; the message names the field."),
                "401": err("Missing or wrong token."),
                "403": err("Another orchestrator's token."),
                "404": err("No such orchestrator, or it reports no such managed agent."),
                "408": err("The body did not arrive within --client-timeout."),
                "413": err("Body over the limit (--max-body, default 1 MiB)."),
                "415": err("Body is not JSON."),
                "421": err(
                    "A relay without an admin token answers only loopback Host names and "
                    "--public-url's."
                ),
                "503": err("The log cannot be written right now; nothing was recorded."),
            },
            "parameters": [path_param("id"), path_param("agentId")],
            "requestBody": _body(w.AttentionReport),
        }
    },
}

# POST .../actions takes either shape, told apart by `action`. An input must type something
# (``InputAction.finish``): text, or Enter; a rule across two fields, stated here.
SOMETHING_TO_TYPE = {
    "anyOf": [
        {"properties": {"text": {"minLength": 1}}},
        {"properties": {"enter": {"enum": [True, None]}}},
    ]
}
ACTION_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [ref(w.ActionRequest), {"allOf": [ref(w.InputAction), SOMETHING_TO_TYPE]}]
            }
        }
    },
}

SSE_EVENTS = (
    "orchestrator.attention: one managed agent, as GET /api/managed-agents lists it, whose "
    "attention changed; it also arrives with ?orchestrator= of its host"
)
