"""The live-output part of the OpenAPI document (issue 16, ADR 0031), merged by ``openapi.py``.

Two operations: a viewer's SSE stream of one agent's terminal, and the host's
push of chunks while that agent is watched. Their shapes (and the
``orchestrator.watch`` frame's, named under the event stream) are declared in
relay.wire.shapes; here is the prose.
"""

from __future__ import annotations

from typing import Any

from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err, ok, params, path_param, ref
from relay.wire import shapes as w

_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds."}}
_AUTH = {
    "401": err("Missing or wrong token.", {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    "421": err(
        "A relay without an admin token answers only loopback Host names and --public-url's."
    ),
}
# What a viewer's stream carries, event by event (an extension: OpenAPI has no word for it).
SSE_EVENTS = {
    "snapshot": ref(w.OutputEvent),
    "output": ref(w.OutputEvent),
    "end": ref(w.OutputEnd),
}
# ... and what a host's own event stream carries besides log events.
WATCH_EVENTS = {"orchestrator.watch": ref(w.OutputWatch)}

PATHS: dict[str, Any] = {
    "/api/orchestrators/{id}/agents/{agentId}/output": {
        "get": {
            "operationId": "streamAgentOutput",
            "summary": "One managed agent's terminal, live, as Server-Sent Events (admin token; "
            "a browser may pass it as ?token=). Events: `snapshot` (reset the terminal, size it "
            "to cols x rows, write data), then `output` (write data), each with OutputEvent "
            "JSON as data; `end` (OutputEnd) when the relay ends the stream (agent no longer "
            "managed, relay stopping); comments every --keepalive seconds. No ids: a reconnect "
            "starts again from a snapshot. Output flows from the host only while someone "
            "watches; until the host answers (it may be offline) the stream stays open and "
            "quiet. A viewer that falls --output-buffer (+ one push) bytes behind is "
            "disconnected. Never recorded in the log.",
            "parameters": [path_param("id"), path_param("agentId"), *params(w.OutputStreamQuery)],
            "responses": {
                "200": {
                    "description": "The stream (text/event-stream), until the client or the "
                    "relay ends it.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    "x-sse-events": SSE_EVENTS,
                },
                "400": err("Malformed id."),
                "403": err(
                    "An orchestrator token (only the admin watches), or a browser request from "
                    "another site."
                ),
                "404": err("No such orchestrator, or it has no such managed agent."),
                "429": err(
                    "The agent has --output-viewers viewers already, or its host "
                    "--output-host-viewers.",
                    _RETRY_AFTER,
                ),
                "503": err("The relay is shutting down."),
                **_AUTH,
            },
        }
    },
    "/api/orchestrators/{id}/output": {
        "post": {
            "operationId": "pushOutput",
            "summary": "A host pushes terminal output of its watched agents (its orchestrator "
            "token). Chunks for agents nobody watches are dropped and named in `unwatched`. "
            "Delivered to viewers without waiting for any; never recorded in the log.",
            "parameters": [path_param("id")],
            "requestBody": _body(w.OutputPush),
            "responses": {
                "200": ok(w.OutputPushResult),
                "400": err("Invalid input; the message names the field."),
                "403": err("Another orchestrator's token, or a browser request from another site."),
                "404": err("No such orchestrator."),
                "408": err("The body did not arrive within --client-timeout."),
                "413": err(
                    "Body over --output-push-max (default 256 KiB; within --max-body and "
                    "--output-rate)."
                ),
                "415": err("Body is not JSON."),
                "429": err(
                    "Over --output-pushes pushes or --output-rate bytes per second for this "
                    "host; wait Retry-After seconds (the chunks are dropped: send a snapshot "
                    "with reset next).",
                    _RETRY_AFTER,
                ),
                **_AUTH,
            },
        }
    },
}
