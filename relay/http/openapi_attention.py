"""The needs-input and answer part of the OpenAPI document (issue 16, ADR 0032, 0033).

Kept together (the shapes ``relay.http.parse`` reads for attention reports and
input actions, and what the read models add to a managed agent) so the
contract the dashboard builds its needs-input queue on is read in one place;
``openapi.py`` merges it.
"""

from __future__ import annotations

from typing import Any

from relay.domain.rules import (
    ATTENTIONS,
    MAX_ATTENTION_EXCERPT,
    MAX_ATTENTION_REASON,
    MAX_INPUT_CHARS,
)
from relay.http.openapi_parts import ID
from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err as _err
from relay.http.openapi_parts import ok as _ok
from relay.http.openapi_parts import ref as _ref

# Printable text: tab and newline allowed, every other control character refused.
TEXT_PATTERN = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"
_ATTENTION = {
    "enum": [*ATTENTIONS, None],
    "description": "input: the agent asks a question and waits for a person's answer (a "
    "permission prompt, `Proceed? [y/N]`); idle: it printed nothing for the host's "
    "--idle-after and asks nothing that the host recognises (it may have finished); null: "
    "neither. Reported by its host (ADR 0032); cleared when its output moves on, when an "
    "input command to it is done, or when it is no longer reported.",
}

# What each managed agent in the read models carries (GET /api/orchestrators, /api/managed-agents).
MANAGED_AGENT_PROPERTIES: dict[str, Any] = {
    "attention": _ATTENTION,
    "attentionSince": {
        "type": ["integer", "null"],
        "description": "Epoch ms the relay recorded the current attention (null with none).",
    },
    "attentionReason": {
        "type": ["string", "null"],
        "maxLength": MAX_ATTENTION_REASON,
        "description": "Why the host thinks so, e.g. `permission_prompt: Claude needs your "
        "permission to use Bash` (the provider's hook) or `no output for 30s; matches "
        "Proceed\\?` (the generic rule).",
    },
    "attentionExcerpt": {
        "type": ["string", "null"],
        "maxLength": MAX_ATTENTION_EXCERPT,
        "description": "The last lines the agent's terminal showed when it was detected, "
        "printable (control characters removed): what the question was.",
    },
    "sessionId": {
        "type": "string",
        "maxLength": 200,
        "description": "The provider's session id, where the provider tells it (Claude Code's "
        "hooks do): what a spawn's `resume` takes.",
    },
}
MANAGED_AGENT_REQUIRED = ["attention"]

REPORT_PROPERTIES: dict[str, Any] = {
    "sessionId": {
        "type": ["string", "null"],
        "maxLength": 200,
        "pattern": "^[^\\x00]*$",
        "description": "The provider's session id, when the host learnt it.",
    },
}

# What an input command adds to a Command.
COMMAND_PROPERTIES: dict[str, Any] = {
    "text": {"type": "string", "description": "input: what was (or will be) typed."},
    "enter": {"type": "boolean", "description": "input: whether Enter follows the text."},
}

_DEADLINE = {
    "type": ["integer", "null"],
    "minimum": 1,
    "description": "Seconds until the command expires; the relay's --command-deadline is both "
    "the default and the most (a longer ask gets it).",
}

SCHEMAS: dict[str, Any] = {
    "InputAction": {
        "type": "object",
        "required": ["action", "agentId", "text"],
        "description": "Type `text` into a managed agent's terminal, literally (never read by a "
        "shell or as tmux key names), then Enter unless `enter` is false. The text is kept in "
        "the log: the audit trail of who told which agent what. When the host reports the "
        "command done, the agent's attention is cleared (AgentInputResumed, reason `input "
        "sent`).",
        "properties": {
            "action": {"const": "input"},
            "agentId": {**ID, "description": "The managed agent to type into."},
            "text": {
                "type": "string",
                "maxLength": MAX_INPUT_CHARS,
                "pattern": TEXT_PATTERN,
                "description": "Printable characters, tab and newline; empty is allowed when "
                "Enter follows (to answer `press Enter`).",
            },
            "enter": {"type": ["boolean", "null"], "default": True},
            "deadlineSeconds": _DEADLINE,
        },
        # Something must be typed: text, or Enter.
        "anyOf": [
            {"properties": {"text": {"minLength": 1}}},
            {"properties": {"enter": {"enum": [True, None]}}},
        ],
    },
    "AttentionReport": {
        "type": "object",
        "required": ["attention"],
        "description": "A host's word on one of its managed agents. Repeating the current "
        "state (same attention and reason; null when it has none) records nothing.",
        "properties": {
            "attention": _ATTENTION,
            "reason": {
                "type": ["string", "null"],
                "maxLength": MAX_ATTENTION_REASON,
                "pattern": TEXT_PATTERN,
            },
            "excerpt": {
                "type": ["string", "null"],
                "maxLength": MAX_ATTENTION_EXCERPT,
                "pattern": TEXT_PATTERN,
                "description": "The terminal's last lines, control characters removed.",
            },
        },
    },
}

_PATH_ID = {"name": "id", "in": "path", "required": True, "schema": ID}
_AGENT_ID = {"name": "agentId", "in": "path", "required": True, "schema": ID}

PATHS: dict[str, Any] = {
    "/api/orchestrators/{id}/agents/{agentId}/attention": {
        "post": {
            "operationId": "reportAttention",
            "summary": "The host says whether a managed agent waits for a person: `input`, "
            "`idle`, or null (it moved on). Records AgentAwaitingInput or AgentInputResumed "
            "when that changes; a repeat records nothing (recorded: false). Its own token "
            "suffices.",
            "responses": {
                "200": _ok(
                    {
                        "type": "object",
                        "required": ["ok", "recorded", "managedAgent"],
                        "properties": {
                            "ok": {"const": True},
                            "recorded": {
                                "type": "boolean",
                                "description": "Whether this report changed anything (an "
                                "event was appended).",
                            },
                            "managedAgent": _ref("ManagedAgentView"),
                        },
                    }
                ),
                "400": _err("Invalid input; the message names the field."),
                "401": _err("Missing or wrong token."),
                "403": _err("Another orchestrator's token."),
                "404": _err("No such orchestrator, or it reports no such managed agent."),
                "408": _err("The body did not arrive within --client-timeout."),
                "413": _err("Body over the limit (--max-body, default 1 MiB)."),
                "415": _err("Body is not JSON."),
                "503": _err("The log cannot be written right now; nothing was recorded."),
            },
            "parameters": [_PATH_ID, _AGENT_ID],
            "requestBody": _body(_ref("AttentionReport")),
        }
    },
}

MANAGED_AGENTS_FILTER = {
    "name": "attention",
    "in": "query",
    "schema": {"enum": list(ATTENTIONS)},
    "description": "Only agents with this attention: `input` is the needs-input queue.",
}

SSE_EVENTS = (
    "orchestrator.attention: one managed agent (as GET /api/managed-agents lists it) whose "
    "attention changed; it also arrives with ?orchestrator= of its host"
)
