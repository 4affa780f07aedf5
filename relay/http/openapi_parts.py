"""Pieces shared by every part of the OpenAPI document.

One home for the id schema and the response builders, so the core document
and the messaging part cannot drift apart (a drift the fuzz test once found).
"""

from __future__ import annotations

from typing import Any

from relay.nesting import MAX_DEPTH

ID_PATTERN = "^[^/\\s\\x00-\\x1f\\x7f-\\x9f]+$"
ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 120,
    "format": "relay-id",
    "pattern": ID_PATTERN,
    "description": "1-120 printable characters without '/' or whitespace. The pattern shuts out "
    "control characters; the relay also refuses the other unprintable ones (format "
    "relay-id: unassigned, private-use and formatting code points).",
}
NO_NUL = "^[^\\x00]*$"
EPOCH_MS = {"type": "integer", "description": "Epoch milliseconds (server receive time)."}
NULLABLE_STR = {"type": ["string", "null"]}
# Free-form objects (meta): the relay's one nesting limit (relay.nesting, ADR 0011).
FREE_FORM_LIMITS = (
    f"Nested at most {MAX_DEPTH} levels (x-maxDepth; the object itself is level 1) and holding "
    "integers within 64 bits (-2^63 to 2^64-1); otherwise 400 naming the field."
)
MAX_DEPTH_EXTENSION = {"x-maxDepth": MAX_DEPTH}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error response: always the contract's ``{"error": ...}``."""
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if headers:
        out["headers"] = headers
    return out


def ok(
    schema: dict[str, Any], description: str = "OK", links: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if links:
        out["links"] = links
    return out


def body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}
