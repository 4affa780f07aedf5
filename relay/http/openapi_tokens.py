"""The enrollment and token part of the OpenAPI document (ADR 0013), merged by ``openapi.py``.

Kept beside the core document like the messaging part, so the operations that
grant, rotate and revoke a host's token are read (and reviewed) together.
"""

from __future__ import annotations

from typing import Any

from relay.http.openapi_parts import body as _body
from relay.http.openapi_parts import err, ok, path_param
from relay.wire import shapes as w

_PATH_ID = path_param("id")
# Enrolling creates the orchestrator: its id must leave room for its agent id (rules.py).
_NEW_ORCHESTRATOR_ID = path_param("id", w.OrchestratorId)
_AUTH = {
    "401": err(
        "Missing or wrong token (when the relay has an admin token), or any token the relay "
        "does not know (rotated, revoked).",
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    "403": err("An orchestrator token: only the admin grants, rotates and revokes tokens."),
}
_ERRORS = {
    "400": err("Invalid input; the message names the field."),
    "408": err("The body did not arrive within --client-timeout."),
    "413": err("Body over the limit (--max-body, default 1 MiB)."),
    "415": err("Body is not JSON."),
    "503": err("The log cannot be written right now (disk full, read-only); nothing was recorded."),
}
_OPTIONAL_BODY = _body(w.Empty, required=False)


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
                "201": ok(w.OrchestratorWithToken, "Enrolled."),
                **_ERRORS,
            },
            parameters=[_NEW_ORCHESTRATOR_ID],
            requestBody=_body(w.Enrollment),
        )
    },
    "/api/orchestrators/{id}/token/rotate": {
        "post": _op(
            "rotateOrchestratorToken",
            "Give the orchestrator a new token (admin only); the previous one is refused (401) "
            "from this write on. Recorded as OrchestratorTokenRotated (a hash only).",
            {
                "200": ok(w.RotatedToken),
                **_ERRORS,
                "404": err("No such orchestrator (or it was removed)."),
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
                "200": ok(w.Ok),
                **_ERRORS,
                "404": err("No such orchestrator (or it was removed)."),
            },
            parameters=[_PATH_ID],
            requestBody=_OPTIONAL_BODY,
        )
    },
}
