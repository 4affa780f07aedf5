"""One declaration per wire shape (ADR 0029): the decoder and the document agree.

No server here: the shapes are decoded directly and the document is built in
process. tests/http checks the same contract over a socket, and the fuzz test
(tests/hardening/test_fuzz.py) drives every operation from the document.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import msgspec
import orjson
import pytest

from relay.domain.errors import InvalidInputError
from relay.http.openapi import document
from relay.wire import shapes as w
from relay.wire.declare import Shape, decode, from_query, kind

DOC = document()


def _validator(name: str) -> Any:
    schema = dict(DOC["components"]["schemas"][name])
    schema["components"] = DOC["components"]
    return jsonschema_rs.Draft202012Validator(schema)


def refused(tp: type[Any], body: Any) -> str:
    with pytest.raises(InvalidInputError) as e:
        decode(orjson.dumps(body), tp)
    return e.value.message


# -- msgspec's error text, read in one place (relay.wire.declare._explain) ---------------------


def test_msgspec_errors_name_the_field_in_wire_names() -> None:
    """Fails if msgspec changes the form of its errors (`... - at `$.agents[1]``)."""
    agent = {"agentId": "m1", "provider": "claude", "tmuxSession": "t"}
    bare = {"agentId": "m2", "provider": "claude"}
    assert refused(w.ManagedAgentsReport, {"agents": [agent, bare]}) == (
        "agents[1].tmuxSession: is required for managed agent 'm2': the tmux session it runs in"
    )
    assert refused(w.ManagedAgentsReport, {"agents": [agent, {**agent, "pid": -1}]}).startswith(
        "agents[1].pid: "
    )
    assert refused(w.OrchestratorRegistration, {"id": "o", "hostname": "h", "baseDir": "/x",
                                                "labels": {"a": 5}}).startswith("labels: ")
    assert refused(w.Heartbeat, [1]) == "body: must be a JSON object"
    assert refused(w.Heartbeat, {"load": {}}).startswith("load.activeAgents: is required")


def test_an_integral_number_is_an_integer_and_a_string_is_not() -> None:
    reg = {"id": "o", "hostname": "h", "baseDir": "/x"}
    assert decode(orjson.dumps({**reg, "maxAgents": 3.0}), w.OrchestratorRegistration).max_agents == 3
    assert refused(w.OrchestratorRegistration, {**reg, "maxAgents": 3.5}).startswith("maxAgents:")
    assert refused(w.OrchestratorRegistration, {**reg, "maxAgents": "3"}).startswith("maxAgents:")
    assert refused(w.OrchestratorRegistration, {**reg, "maxAgents": True}).startswith("maxAgents:")
    # Free-form values keep their floats exactly as sent.
    meta = decode(orjson.dumps({**reg, "maxAgents": 2.0, "meta": {"f": 1.0}}), w.OrchestratorRegistration)
    assert meta.meta == {"f": 1.0} and isinstance(meta.meta["f"], float)


def test_queries_are_strict_and_given_once() -> None:
    assert from_query({"after": ["5"], "limit": ["7"]}, w.Page) == w.Page(after=5, limit=7)
    for value in ("1e2", "5.0", "+5", " 5", "1_0", "٣", ""):
        with pytest.raises(InvalidInputError, match=r"^limit: "):
            from_query({"limit": [value]}, w.Page)
    with pytest.raises(InvalidInputError, match=r"^limit: give this query parameter once"):
        from_query({"limit": ["1", "2"]}, w.Page)
    # A lax conversion would read "null" as "not given".
    with pytest.raises(InvalidInputError, match=r"^status: must be one of online, offline"):
        from_query({"status": ["null"]}, w.AgentsQuery)


# -- the declaration is the validator and the schema ----------------------------------------------


def _boundaries(schema: dict[str, Any], sample: Any) -> list[tuple[Any, bool]]:
    """Values at and just past each limit the schema states, and whether each is within
    (strings grown from a valid ``sample``, so that they keep its pattern)."""
    out: list[tuple[Any, bool]] = []
    if "maxLength" in schema:
        n = schema["maxLength"]
        grown = (sample if isinstance(sample, str) else "a") + "a" * (n + 1)
        out += [(grown[:n], True), (grown[: n + 1], False)]
    if schema.get("minLength", 0) >= 1:
        out += [("", False)]
    if "maximum" in schema:
        out += [(schema["maximum"], True), (schema["maximum"] + 1, False)]
    if "minimum" in schema:
        out += [(schema["minimum"], True), (schema["minimum"] - 1, False)]
    if "maxItems" in schema and "enum" not in schema.get("items", {}):
        n = schema["maxItems"]
        out += [(["a"] * n, True), (["a"] * (n + 1), False)]
    if "enum" in schema:
        out += [(v, True) for v in schema["enum"] if v is not None] + [("not-one-of-them", False)]
    return out


REQUEST_BODIES = {
    "OrchestratorRegistration": {"id": "o1", "hostname": "h", "baseDir": "/srv/w"},
    "AgentRegistration": {"id": "a1"},
    "SpawnRequest": {"provider": "claude"},
    "ActionRequest": {"action": "restart"},
    "CommandResultRequest": {"status": "done"},
    "Enrollment": {"baseDir": "/srv/w"},
    "ClaimRequest": {"agentId": "a1"},
    "ClaimHolder": {"agentId": "a1"},
    "MessageRequest": {"from": "a1", "to": "a2", "body": "hi"},
    "Load": {"activeAgents": 1},
    "ManagedAgentReport": {"agentId": "m1", "provider": "claude", "tmuxSession": "t", "worktree": "/w"},
    "OutputChunk": {"agentId": "a1", "data": "\u001b[31mred\u001b[0m\r\n"},
}


@pytest.mark.parametrize("name", sorted(REQUEST_BODIES))
def test_every_stated_limit_is_the_one_the_decoder_keeps(name: str) -> None:
    """At each limit the document states, the decoder agrees: within accepted, past refused.

    Both come from one declaration; a schema generated apart from the
    validator (or a hand edit of either) fails here.
    """
    tp = getattr(w, name)
    base = REQUEST_BODIES[name]
    validator = _validator(name)
    assert validator.is_valid(base)
    decode(orjson.dumps(base), tp)
    checked = 0
    # The limits as declared (msgspec's own reading of the shape), not as the document says
    # them: a limit the document lost would otherwise go untested.
    (_, declared) = msgspec.json.schema_components([tp])
    for field, prop in declared[name]["properties"].items():
        arms = [a for a in prop.get("anyOf", [prop]) if a != {"type": "null"}]
        for value, within in _boundaries(arms[0], base.get(field)):
            body = {**base, field: value}
            if field == "envKeys" and isinstance(value, list):
                body[field] = [f"K{i}" for i in range(len(value))]
            schema_ok = validator.is_valid(body)
            try:
                decode(orjson.dumps(body), tp)
                decoded_ok = True
            except InvalidInputError as e:
                decoded_ok = False
                assert e.field.split(".")[0].split("[")[0] == field, (field, value, e.message)
            assert schema_ok == decoded_ok == within, (name, field, str(value)[:40], schema_ok, decoded_ok)
            checked += 1
    assert checked >= 2, name


def test_one_new_field_is_validated_and_documented_at_once() -> None:
    """Adding a field is one declaration: the decoder checks it and the schema states it."""

    class WithRegion(w.OrchestratorRegistration, kw_only=True):
        region: kind(str, "must be a region name of at most 20 characters", max_length=20) | None = None

    base = {"id": "o1", "hostname": "h", "baseDir": "/srv/w"}
    assert decode(orjson.dumps({**base, "region": "eu-west"}), WithRegion).region == "eu-west"
    assert refused(WithRegion, {**base, "region": "x" * 21}) == (
        "region: must be a region name of at most 20 characters"
    )
    (_, schemas) = msgspec.json.schema_components([WithRegion])
    assert schemas["WithRegion"]["properties"]["region"]["anyOf"][0]["maxLength"] == 20
    assert WithRegion(id="o", hostname="h", base_dir="/x", region="r").event_fields()["region"] == "r"


def test_every_request_body_and_query_in_the_document_is_a_declared_shape() -> None:
    shapes = {n for n, v in vars(w).items() if isinstance(v, type) and issubclass(v, Shape)}
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = content.get("schema", {}).get("$ref", "")
            if ref:
                assert ref.rsplit("/", 1)[1] in shapes, (method, path, ref)
    assert set(DOC["components"]["schemas"]) - {"JsonValue"} <= shapes


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("OrchestratorRegistration", "id"),
        ("AgentRegistration", "id"),
        ("ClaimRequest", "agentId"),
        ("ClaimHolder", "agentId"),
        ("MessageRequest", "from"),
        ("MessageRequest", "to"),
        ("ActionRequest", "agentId"),
    ],
)
def test_the_id_rule_is_the_domains_whatever_the_pattern_lets_through(name: str, field: str) -> None:
    """The schema's pattern cannot say "printable"; the declaration runs rules.check_id too."""
    base = REQUEST_BODIES[name]
    for unprintable in ("a\ue000", "a\u0378", "a\u200b"):  # private use, unassigned, format
        body = {**base, field: unprintable}
        assert _validator(name).is_valid(body)  # the pattern alone lets it through...
        assert refused(getattr(w, name), body).startswith(f"{field}: ")  # ...the rule does not


def test_unknown_fields_are_ignored_at_every_level() -> None:
    """Inside a list of shapes too: an integer past 64 bits or a deep nest in a field no
    handler reads is not refused (it is never stored); in a field that is read, it is. The
    ``5.0``s take the decoder's slow path (an integral float), where this once went wrong."""
    huge = b"123456789012345678901234"
    deep = b"[" * 70 + b"0" + b"]" * 70
    push = b'{"chunks": [{"agentId": "a1", "data": "x", "at": 5.0, "extra": [%s], "nest": %s}]}' % (
        huge, deep)
    assert decode(push, w.OutputPush).chunks[0].data == "x"
    report = (
        b'{"agents": [{"agentId": "m1", "provider": "claude", "tmuxSession": "t", '
        b'"startedAt": 5.0, "extra": {"n": %s}}]}' % huge
    )
    assert decode(report, w.ManagedAgentsReport).agents[0].agent_id == "m1"
    read = b'{"chunks": [{"agentId": "a1", "data": "x", "at": %s}]}' % huge
    with pytest.raises(InvalidInputError) as e:
        decode(read, w.OutputPush)
    assert e.value.field == "chunks[0].at"
