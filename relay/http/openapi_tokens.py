"""The enrollment and token part of the OpenAPI document (ADR 0013), merged by ``openapi.py``.

Kept beside the core document like the messaging part, so the operations that
grant, rotate and revoke a host's token are read (and reviewed) together.
"""

from __future__ import annotations

from typing import Any

from relay.domain.rules import MAX_ORCHESTRATOR_ID_CHARS, PROVIDERS
from relay.http.openapi_parts import ID
from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err as _err
from relay.http.openapi_parts import ok as _ok
from relay.http.openapi_parts import ref as _ref

_PATH_ID = {"name": "id", "in": "path", "required": True, "schema": ID}
# Enrolling creates the orchestrator: its id must leave room for its agent id (rules.py).
_NEW_ORCHESTRATOR_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {**ID, "maxLength": MAX_ORCHESTRATOR_ID_CHARS},
}
_TOKEN = {
    "type": "string",
    "minLength": 32,
    "description": "The orchestrator's token: valid only for its own heartbeat, reports, "
    "commands, results, event stream and re-registration inside its granted baseDir. Shown "
    "once; the log keeps only its SHA-256. Give it to the host in a 0600 file "
    "(`relay host --token-file`), never on a command line.",
}
_AUTH = {
    "401": _err(
        "Missing or wrong token (when the relay has an admin token), or any token the relay "
        "does not know (rotated, revoked).",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "403": _err("An orchestrator token: only the admin grants, rotates and revokes tokens."),
}
_ERRORS = {
    "400": _err("Invalid input; the message names the field."),
    "408": _err("The body did not arrive within --client-timeout."),
    "413": _err("Body over the limit (--max-body, default 1 MiB)."),
    "415": _err("Body is not JSON."),
    "503": _err("The log cannot be written right now (disk full, read-only); nothing was recorded."),
}
_OPTIONAL_BODY = _body(
    {"type": "object", "description": "Ignored; if sent, it must be a JSON object."}, required=False
)

SCHEMAS: dict[str, Any] = {
    "Enrollment": {
        "type": "object",
        "required": ["baseDir"],
        "description": "What an admin grants a host. Unknown fields are ignored; null means "
        "not given (a known orchestrator keeps its hostname and providers, a new one gets its "
        "id and every provider).",
        "properties": {
            "baseDir": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4096,
                "pattern": "^/[^\\x00]*$",
                "description": "Absolute path; stored normalised. The host's own token can "
                "re-register with this folder or one inside it (by path components), never "
                "with anything wider.",
            },
            "hostname": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": 200,
                "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$",
            },
            "providers": {
                "type": ["array", "null"],
                "items": {"enum": list(PROVIDERS)},
                "minItems": 1,
                "maxItems": len(PROVIDERS),
            },
        },
    },
    "RotatedToken": {
        "type": "object",
        "required": ["orchestratorId", "orchestratorToken"],
        "properties": {"orchestratorId": ID, "orchestratorToken": _TOKEN},
    },
}


def _op(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, **_AUTH},
        **extra,
    }


PATHS: dict[str, Any] = {
    "/api/orchestrators/{id}/enroll": {
        "post": _op(
            "enrollOrchestrator",
            "Enroll a host: grant it a baseDir and its own token (admin only). A new id is "
            "listed offline until its host registers; a known one gets the new grant, and its "
            "previous token stops working. Recorded as OrchestratorEnrolled or "
            "OrchestratorReenrolled, holding the token's SHA-256 only.",
            {
                "201": _ok(
                    {
                        "allOf": [
                            _ref("Orchestrator"),
                            {
                                "type": "object",
                                "required": ["orchestratorToken"],
                                "properties": {"orchestratorToken": _TOKEN},
                            },
                        ]
                    },
                    "Enrolled.",
                ),
                **_ERRORS,
            },
            parameters=[_NEW_ORCHESTRATOR_ID],
            requestBody=_body(_ref("Enrollment")),
        )
    },
    "/api/orchestrators/{id}/token/rotate": {
        "post": _op(
            "rotateOrchestratorToken",
            "Give the orchestrator a new token (admin only); the previous one is refused (401) "
            "from this write on. Recorded as OrchestratorTokenRotated (a hash only).",
            {
                "200": _ok(_ref("RotatedToken")),
                **_ERRORS,
                "404": _err("No such orchestrator (or it was removed)."),
            },
            parameters=[_PATH_ID],
            requestBody=_OPTIONAL_BODY,
        )
    },
    "/api/orchestrators/{id}/token/revoke": {
        "post": _op(
            "revokeOrchestratorToken",
            "Revoke the orchestrator's token (admin only): no token works for it until an admin "
            "rotates it, enrolls or registers it again. Recorded as OrchestratorTokenRevoked; "
            "revoking a revoked token records nothing.",
            {
                "200": _ok(_ref("Ok")),
                **_ERRORS,
                "404": _err("No such orchestrator (or it was removed)."),
            },
            parameters=[_PATH_ID],
            requestBody=_OPTIONAL_BODY,
        )
    },
}
