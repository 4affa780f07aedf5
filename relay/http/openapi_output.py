"""The live-output part of the OpenAPI document (issue 16, ADR 0031), merged by ``openapi.py``.

Two operations and the shapes around them: a viewer's SSE stream of one
agent's terminal, and the host's push of chunks while that agent is watched;
plus the ``orchestrator.watch`` frame the host reads on its own event stream.
Kept in one place, beside ``parse.output_push``, so both convert to
declarations together.
"""

from __future__ import annotations

from typing import Any

from relay.http.openapi_parts import ID
from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err as _err
from relay.http.openapi_parts import ok as _ok
from relay.http.openapi_parts import ref as _ref

MAX_CHUNKS = 1000  # parse.MAX_OUTPUT_CHUNKS
MAX_SIDE = 10_000  # parse.MAX_TERMINAL_SIDE

_PATH_ID = {"name": "id", "in": "path", "required": True, "schema": ID}
_PATH_AGENT = {"name": "agentId", "in": "path", "required": True, "schema": ID}
_SIDE = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_SIDE}
_AT = {
    "type": ["integer", "null"],
    "minimum": 0,
    "maximum": 2**53 - 1,
    "description": "Epoch milliseconds on the host when it read the output.",
}
_TEXT = {
    "type": "string",
    "description": "Terminal text as the program wrote it, ANSI escape sequences kept "
    "(colours, cursor moves): write it to a terminal emulator such as xterm.js, not to HTML.",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds."}}

SCHEMAS: dict[str, Any] = {
    "OutputChunk": {
        "type": "object",
        "required": ["agentId", "data"],
        "description": "One piece of an agent's terminal. `snapshot`: the pane's recent history "
        "and screen, ending with the cursor put where it is (a terminal is reset before "
        "it); `output`: what the program wrote since, in order. Unknown fields are ignored.",
        "properties": {
            "agentId": ID,
            "kind": {"enum": ["output", "snapshot", None], "default": "output"},
            "data": _TEXT,
            "reset": {
                "type": ["boolean", "null"],
                "description": "snapshot only: output was lost before it (a new watch, a failed "
                "push, a burst over the limits), so viewers that already follow start over "
                "from it; otherwise only viewers waiting for a screen get it.",
            },
            "cols": _SIDE,
            "rows": _SIDE,
            "at": _AT,
        },
    },
    "OutputPush": {
        "type": "object",
        "required": ["chunks"],
        "description": "A host's output for its watched agents (orchestrator token). Sent only "
        "while the relay's orchestrator.watch frame lists the agent; at most pushBytes bytes, "
        "pushesPerSecond times and bytesPerSecond bytes a second (the frame's limits).",
        "properties": {
            "chunks": {"type": "array", "maxItems": MAX_CHUNKS, "items": _ref("OutputChunk")},
        },
    },
    "OutputPushResult": {
        "type": "object",
        "required": ["ok", "delivered", "unwatched"],
        "properties": {
            "ok": {"const": True},
            "delivered": {
                "type": "integer",
                "minimum": 0,
                "description": "Chunks for agents someone watches here.",
            },
            "unwatched": {
                "type": "array",
                "items": ID,
                "description": "Agents that had chunks but no viewer (dropped).",
            },
        },
    },
    "OutputWatch": {
        "type": "object",
        "required": ["orchestratorId", "agents", "refresh", "limits"],
        "description": "The data of an `orchestrator.watch` frame on GET /api/events"
        "?orchestrator=ID: which of the host's agents someone watches now (push output for "
        "these, and nothing for the others), which of them need a fresh snapshot, and the "
        "push limits. Sent when the set changes and each time the stream goes live; it has "
        "no `id:` (it is not a log event, so it never moves Last-Event-ID).",
        "properties": {
            "orchestratorId": ID,
            "agents": {"type": "array", "items": ID},
            "refresh": {"type": "array", "items": ID},
            "limits": {
                "type": "object",
                "required": ["pushesPerSecond", "bytesPerSecond", "pushBytes"],
                "properties": {
                    "pushesPerSecond": {"type": "number"},
                    "bytesPerSecond": {"type": "integer"},
                    "pushBytes": {"type": "integer"},
                },
            },
        },
    },
    "OutputEvent": {
        "type": "object",
        "required": ["data"],
        "description": "The data of a viewer's `snapshot` and `output` events (JSON, so any "
        "terminal text fits one SSE data line).",
        "properties": {"data": _TEXT, "cols": _SIDE, "rows": _SIDE, "at": _AT},
    },
}

PATHS: dict[str, Any] = {
    "/api/orchestrators/{id}/agents/{agentId}/output": {
        "get": {
            "operationId": "streamAgentOutput",
            "summary": "One managed agent's terminal, live, as Server-Sent Events (admin token; "
            "a browser may pass it as ?token=). Events: `snapshot` (reset the terminal, size it "
            "to cols x rows, write data), then `output` (write data), each with OutputEvent "
            "JSON as data; `end` ({reason}) when the relay ends the stream (agent no longer "
            "managed, relay stopping); comments every --keepalive seconds. No ids: a reconnect "
            "starts again from a snapshot. Output flows from the host only while someone "
            "watches; until the host answers (it may be offline) the stream stays open and "
            "quiet. A viewer that falls --output-buffer (+ one push) bytes behind is "
            "disconnected. Never recorded in the log.",
            "parameters": [
                _PATH_ID,
                _PATH_AGENT,
                {
                    "name": "token",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "The token, for browsers' EventSource (cannot set headers).",
                },
            ],
            "responses": {
                "200": {
                    "description": "The stream (text/event-stream), until the client or the "
                    "relay ends it.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _err("Malformed id."),
                "401": _err(
                    "Missing or wrong token.", {"WWW-Authenticate": {"schema": {"type": "string"}}}
                ),
                "403": _err(
                    "An orchestrator token (only the admin watches), or a browser request from "
                    "another site."
                ),
                "404": _err("No such orchestrator, or it has no such managed agent."),
                "421": _err(
                    "A relay without an admin token answers only loopback Host names and "
                    "--public-url's."
                ),
                "429": _err(
                    "The agent has --output-viewers viewers already, or its host "
                    "--output-host-viewers.",
                    _RETRY_AFTER,
                ),
                "503": _err("The relay is shutting down."),
            },
        }
    },
    "/api/orchestrators/{id}/output": {
        "post": {
            "operationId": "pushOutput",
            "summary": "A host pushes terminal output of its watched agents (its orchestrator "
            "token). Chunks for agents nobody watches are dropped and named in `unwatched`. "
            "Delivered to viewers without waiting for any; never recorded in the log.",
            "parameters": [_PATH_ID],
            "requestBody": _body(_ref("OutputPush")),
            "responses": {
                "200": _ok(_ref("OutputPushResult")),
                "400": _err("Invalid input; the message names the field."),
                "401": _err(
                    "Missing or wrong token.", {"WWW-Authenticate": {"schema": {"type": "string"}}}
                ),
                "403": _err("Another orchestrator's token, or a browser request from another site."),
                "404": _err("No such orchestrator."),
                "408": _err("The body did not arrive within --client-timeout."),
                "413": _err("Body over --output-push-max (default 256 KiB) or --max-body."),
                "415": _err("Body is not JSON."),
                "421": _err(
                    "A relay without an admin token answers only loopback Host names and "
                    "--public-url's."
                ),
                "429": _err(
                    "Over --output-pushes pushes or --output-rate bytes per second for this "
                    "host; wait Retry-After seconds (the chunks are dropped: send a snapshot "
                    "with reset next).",
                    _RETRY_AFTER,
                ),
            },
        }
    },
}
