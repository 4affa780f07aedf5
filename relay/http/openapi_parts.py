"""Builders shared by every part of the OpenAPI document.

Schemas are never written here: ``ref(Shape)`` names a declared wire shape
(relay.wire.shapes) and ``components()`` generates every named one with
msgspec, so what the document states is what the decoder checks (ADR 0029).
The parts write prose only: summaries, which statuses an operation answers,
and why.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.wire import shapes as w
from relay.wire.declare import shape_fields

PREFIX = "#/components/schemas/"
_NAMED: dict[str, type[Any]] = {}


def ref(shape: type[Any]) -> dict[str, str]:
    """A reference to ``shape``'s schema (generated into the components)."""
    _NAMED[shape.__name__] = shape
    return {"$ref": PREFIX + shape.__name__}


def array_of(shape: type[Any]) -> dict[str, Any]:
    return {"type": "array", "items": ref(shape)}


def schema_of(annotation: Any) -> dict[str, Any]:
    """The schema of a field kind (a path parameter's, for one)."""
    return tidy(msgspec.json.schema(annotation, ref_template=PREFIX + "{name}"))


def err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error response: always the contract's ``{"error": ...}``."""
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref(w.Error)}},
    }
    if headers:
        out["headers"] = headers
    return out


def ok(
    schema: dict[str, Any] | type[Any],
    description: str = "OK",
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema if isinstance(schema, dict) else ref(schema)}},
    }
    if links:
        out["links"] = links
    return out


def body(shape: type[Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": ref(shape)}}}


def path_param(name: str, annotation: Any = w.Id) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema_of(annotation)}


def params(shape: type[Any]) -> list[dict[str, Any]]:
    """A query shape's fields as query parameters (a parameter is never null: it is absent)."""
    _, named = msgspec.json.schema_components([shape], ref_template=PREFIX + "{name}")
    props = tidy(named[shape.__name__])["properties"]
    out = []
    for f in shape_fields(shape):
        schema = dict(props[f.encode_name])
        if isinstance(schema.get("type"), list):
            schema["type"] = next(t for t in schema["type"] if t != "null")
        if "enum" in schema:
            schema["enum"] = [v for v in schema["enum"] if v is not None]
        if schema.get("default", 0) is None:
            del schema["default"]
        param: dict[str, Any] = {"name": f.encode_name, "in": "query", "schema": schema}
        if "description" in schema:
            param["description"] = schema.pop("description")
        out.append(param)
    return out


def components() -> dict[str, Any]:
    """Every shape some operation names, and what they name in turn."""
    _, schemas = msgspec.json.schema_components(
        sorted(_NAMED.values(), key=lambda t: t.__name__), ref_template=PREFIX + "{name}"
    )
    schemas["JsonValue"] = w.JSON_VALUE_SCHEMA
    for name, shape in _NAMED.items():
        # A rule across fields that JSON Schema can state (if/then), written on the shape.
        schemas[name].update(getattr(shape, "SCHEMA_EXTRA", {}))
    return {name: tidy(s) for name, s in sorted(schemas.items())}


def tidy(schema: Any) -> Any:
    """msgspec's schema, easier to read: ``X | None`` as one type with null, no titles.

    ``{"anyOf": [{"type": "string", ...}, {"type": "null"}]}`` means the same as
    ``{"type": ["string", "null"], ...}`` (JSON Schema 2020-12); the second keeps
    a field's limits and extensions (x-maxDepth) where a reader looks for them.
    """
    if isinstance(schema, list):
        return [tidy(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: tidy(v) for k, v in schema.items() if k != "title"}
    arms = out.get("anyOf")
    if isinstance(arms, list) and len(arms) == 2 and {"type": "null"} in arms:
        other = arms[0] if arms[1] == {"type": "null"} else arms[1]
        rest = {k: v for k, v in out.items() if k != "anyOf"}
        if isinstance(other.get("type"), str) and "anyOf" not in other:
            return {**other, **rest, "type": [other["type"], "null"]}
        if "enum" in other and "type" not in other:
            return {**other, **rest, "enum": [*other["enum"], None]}
    return out
