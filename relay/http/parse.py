"""The border between outside data and our types: shape checks only.

Existence is the application's business and rules are the domain's; here we
check that a field is there, has the right type and fits its limit, and name
the field when it does not.
"""

from __future__ import annotations

import asyncio
import functools
import json
import posixpath
import re
from typing import Any

import orjson
from aiohttp import web

from relay.domain.errors import InvalidInputError, RelayError
from relay.domain.rules import (
    ACTIONS,
    APPROVAL_MODES,
    DEFAULT_APPROVAL_MODE,
    MAX_PROMPT_CHARS,
    PROVIDERS,
    RESULT_STATUSES,
    check_env_key,
    check_id,
    check_orchestrator_id,
)
from relay.http.keys import SETTINGS
from relay.nesting import MAX_DEPTH, big_int_path, brackets, parse_int, too_deep_field
from relay.projections.messages import BROADCAST_ALL, LABEL_PREFIX, TAG_PREFIX, is_broadcast

MAX_NAME = 200
MAX_PATH = 4096
MAX_TAGS = 64
MAX_LIST_ITEM = 100
MAX_ENV_KEYS = 1000
MAX_MANAGED_AGENTS = 1000
MAX_ERROR = 4000

_INT = re.compile(r"-?[0-9]+")  # ASCII digits only: int() also takes other scripts and "1_0"


class UnsupportedMediaError(RelayError):
    """Raised when a body is sent with a content type other than JSON."""

    status = 415


class BodyTimeoutError(RelayError):
    """Raised when a client does not finish sending its body in time (a slow or stalled sender)."""

    status = 408


async def read_json(
    request: web.Request, required: bool = True, stored: bool = True
) -> dict[str, Any]:
    """The request's JSON object; 415 for other content types, 400 for bad JSON.

    ``stored=False`` for a body that never reaches the log (live output): the
    log's own limits (nesting, 64-bit integers) then do not apply."""
    if request.content.is_eof():
        # The whole body is already here (the usual case: it came with the
        # headers), so nothing can stall: skip the timer, ~5% of a heartbeat's
        # time on the loop (docs/benchmarks.md).
        body = await request.read()  # raises 413 past client_max_size
    else:
        timeout = request.app[SETTINGS].client_timeout
        try:
            async with asyncio.timeout(timeout):
                body = await request.read()
        except TimeoutError:
            raise BodyTimeoutError(
                f"the request body did not arrive within {timeout:g} s; send it whole and promptly"
            ) from None
    if not body:
        if required:
            raise InvalidInputError("body", "a JSON object is required")
        return {}
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaError(
            f"the body must be JSON (Content-Type: application/json), not {ctype or 'untyped'}"
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "depth limit" in e.msg or "recursion" in e.msg.lower():
            raise InvalidInputError("body", f"is nested deeper than {MAX_DEPTH} levels") from None
        if "infinity" in e.msg:  # maybe an integer literal too long for any number type
            _refuse_big_ints(body)
        raise InvalidInputError("body", f"not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InvalidInputError("body", "must be a JSON object")
    if stored:
        _check_storable(body, data)
    return data


# The shortest integer literal that can pass 64 bits has 19 digits. Mapping every
# digit to "0" and looking for 19 zeros in a row runs in C: ~10x a regex.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGITS = b"0" * 19


def _check_storable(raw: bytes, data: dict[str, Any]) -> None:
    """Refuse what the log could not keep as sent (ADR 0011), naming the field.

    A field nested past ``MAX_DEPTH`` would be stored and then break every
    reader; an integer past 64 bits is read by orjson as a float, a different
    number. Both checks are skipped when the bytes cannot hold the problem.
    """
    if brackets(raw) > MAX_DEPTH:
        field = too_deep_field(_read_fields(data))
        if field is not None:
            raise InvalidInputError(field, f"is nested deeper than {MAX_DEPTH} levels")
    if _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO):
        _refuse_big_ints(raw)


def _read_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The body's fields some handler reads; the rest are ignored, so nothing of them is stored
    and they cannot hurt the log (the document allows unknown fields: refusing them would
    refuse schema-valid requests)."""
    known = _known_fields()
    return {k: v for k, v in data.items() if k in known}


@functools.cache
def _known_fields() -> frozenset[str]:
    """Every property name of every schema in the OpenAPI document (one source of truth)."""
    from relay.http.openapi import SCHEMAS

    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                names.update(props)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(SCHEMAS)
    return frozenset(names)


def _refuse_big_ints(raw: bytes) -> None:
    """400 naming the first integer beyond 64 bits in a field a handler reads, if there is one."""
    try:
        parsed = json.loads(raw, parse_int=parse_int)
        where = big_int_path(_read_fields(parsed) if isinstance(parsed, dict) else parsed)
    except (ValueError, RecursionError):
        return  # not JSON the standard library reads either: the caller's error stands
    if where is not None:
        raise InvalidInputError(
            where, "is an integer beyond 64 bits, which cannot be kept exactly; send it as a string"
        )


def req_str(body: dict[str, Any], field: str, max_len: int = MAX_NAME) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(field, "is required and must be a non-empty string")
    return opt_str(body, field, max_len) or ""


def opt_str(body: dict[str, Any], field: str, max_len: int = MAX_NAME) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(field, "must be a string")
    if len(value) > max_len:
        raise InvalidInputError(field, f"must be at most {max_len} characters")
    if "\x00" in value:
        raise InvalidInputError(field, "must not contain NUL characters")
    return value


def str_list(
    body: dict[str, Any], field: str, max_items: int = MAX_TAGS, max_len: int = MAX_LIST_ITEM
) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInputError(field, "must be a list of strings")
    if len(value) > max_items:
        raise InvalidInputError(field, f"must have at most {max_items} items")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > max_len:
            raise InvalidInputError(
                field, f"must be a list of non-empty strings of at most {max_len} characters"
            )
    return list(dict.fromkeys(value))  # drop duplicates, keep order


def obj(body: dict[str, Any], field: str) -> dict[str, Any]:
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(field, "must be a JSON object")
    return value


def opt_int(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise InvalidInputError(field, "must be a non-negative integer")
    return value


def one_of(body: dict[str, Any], field: str, allowed: tuple[str, ...], default: str | None) -> str:
    value = body.get(field)
    if value is None:
        if default is None:
            raise InvalidInputError(field, f"is required: one of {', '.join(allowed)}")
        return default
    if value not in allowed:
        raise InvalidInputError(field, f"must be one of {', '.join(allowed)}")
    return str(value)


# -- bodies ----------------------------------------------------------------------


def orchestrator_registration(body: dict[str, Any]) -> dict[str, Any]:
    oid = check_orchestrator_id("id", body.get("id"))
    hostname = req_str(body, "hostname")
    base_dir = req_str(body, "baseDir", MAX_PATH)
    if not posixpath.isabs(base_dir):
        raise InvalidInputError("baseDir", "must be an absolute path")
    providers = str_list(body, "providers", max_items=len(PROVIDERS))
    if providers is None:
        providers = list(PROVIDERS)
    if not providers:
        raise InvalidInputError("providers", f"must name at least one of {', '.join(PROVIDERS)}")
    for p in providers:
        if p not in PROVIDERS:
            raise InvalidInputError("providers", f"must be a subset of {', '.join(PROVIDERS)}")
    env_keys = str_list(body, "envKeys", max_items=MAX_ENV_KEYS, max_len=256) or []
    for k in env_keys:
        check_env_key("envKeys", k)
    return {
        "orchestrator_id": oid,
        "hostname": hostname,
        "base_dir": posixpath.normpath(base_dir),
        "providers": providers,
        "env_keys": env_keys,
        "meta": obj(body, "meta"),
    }


def agent_registration(body: dict[str, Any]) -> dict[str, Any]:
    from relay.domain.rules import ORCHESTRATOR_AGENT_PREFIX

    aid = check_id("id", body.get("id"))
    if aid.startswith(ORCHESTRATOR_AGENT_PREFIX):
        raise InvalidInputError(
            "id",
            f"ids starting with {ORCHESTRATOR_AGENT_PREFIX!r} are reserved for orchestrators; "
            "register the orchestrator instead",
        )
    if is_broadcast(aid):
        raise InvalidInputError(
            "id", "'*' and ids starting with 'label:' or 'tag:' are message targets, not agent ids"
        )
    return {
        "agent_id": aid,
        "name": opt_str(body, "name") or aid,
        "label": opt_str(body, "label"),
        "tags": str_list(body, "tags") or [],
        "machine": opt_str(body, "machine"),
        "capabilities": str_list(body, "capabilities") or [],
        "meta": obj(body, "meta"),
    }


def managed_agents(body: dict[str, Any], at: int) -> list[dict[str, Any]]:
    items = body.get("agents")
    if not isinstance(items, list):
        raise InvalidInputError("agents", "is required and must be a list of managed agents")
    if len(items) > MAX_MANAGED_AGENTS:
        raise InvalidInputError("agents", f"must have at most {MAX_MANAGED_AGENTS} items")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"agents[{i}]"
        if not isinstance(item, dict):
            raise InvalidInputError(where, "must be an object")
        aid = check_id(f"{where}.agentId", item.get("agentId"))
        if aid in seen:
            raise InvalidInputError(f"{where}.agentId", f"{aid!r} is listed twice")
        seen.add(aid)
        provider = one_of(item, "provider", PROVIDERS, None)
        agent: dict[str, Any] = {
            "agentId": aid,
            "provider": provider,
            "tmuxSession": _tmux_session(item, where, aid),
            "cwd": opt_str(item, "cwd", MAX_PATH) or "",
            "approvalMode": one_of(item, "approvalMode", APPROVAL_MODES, DEFAULT_APPROVAL_MODE),
            "startedAt": opt_int(item, "startedAt") or at,
        }
        label = opt_str(item, "label")
        if label is not None:
            agent["label"] = label
        pid = opt_int(item, "pid")
        if pid is not None:
            agent["pid"] = pid
        agent.update(crash_report(item, where))
        out.append(agent)
    return out


def _tmux_session(item: dict[str, Any], where: str, agent_id: str) -> str:
    """Required: without it nobody can find (or attach to) the agent on its host."""
    value = item.get("tmuxSession")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            f"{where}.tmuxSession",
            f"is required for managed agent {agent_id!r}: the tmux session it runs in",
        )
    if len(value) > MAX_NAME or "\x00" in value:
        raise InvalidInputError(
            f"{where}.tmuxSession",
            f"of managed agent {agent_id!r} must be at most {MAX_NAME} characters, without NUL",
        )
    return value


def spawn(body: dict[str, Any]) -> dict[str, Any]:
    provider = body.get("provider")
    if not isinstance(provider, str) or not provider:
        raise InvalidInputError("provider", f"is required: one of {', '.join(PROVIDERS)}")
    if provider not in PROVIDERS:
        raise InvalidInputError("provider", f"must be one of {', '.join(PROVIDERS)}")
    prompt = opt_str(body, "prompt", max_len=10**9)
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInputError("prompt", f"must be at most {MAX_PROMPT_CHARS} characters")
    return {
        "provider": provider,
        "cwd": opt_str(body, "cwd", MAX_PATH),
        "label": opt_str(body, "label"),
        "approval_mode": one_of(body, "approvalMode", APPROVAL_MODES, DEFAULT_APPROVAL_MODE),
        "prompt": prompt,
    }


def action(body: dict[str, Any]) -> dict[str, Any]:
    agent_id = body.get("agentId")
    return {
        "action": one_of(body, "action", ACTIONS, None),
        "agent_id": None if agent_id is None else check_id("agentId", agent_id),
    }


def command_result(body: dict[str, Any]) -> dict[str, Any]:
    agent_id = body.get("agentId")
    return {
        "status": one_of(body, "status", RESULT_STATUSES, None),
        "error": opt_str(body, "error", MAX_ERROR),
        "agent_id": None if agent_id is None else check_id("agentId", agent_id),
    }


def query_one(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (``?a=1&a=2`` is ambiguous: refused)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidInputError(name, "give this query parameter once")
    return values[0] if values else None


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = query_one(request, name)
    if raw is None:
        return default
    if not _INT.fullmatch(raw):
        raise InvalidInputError(name, "must be an integer")
    if len(raw) > 30:  # far out of any range; int() refuses past 4300 digits anyway
        raise InvalidInputError(name, f"must be between {lo} and {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidInputError(name, f"must be between {lo} and {hi}")
    return value


def query_choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = query_one(request, name)
    if raw is None:
        return None
    if raw not in allowed:
        raise InvalidInputError(name, f"must be one of {', '.join(allowed)}")
    return raw


# -- messages (ADR 0010) ---------------------------------------------------------------

MAX_SUBJECT = 1000
DEFAULT_LEASE_SECONDS = 60


def message(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/messages``: who, to whom, what; ``meta`` is kept as given."""
    from relay.domain.message import MESSAGE_TYPES, PRIORITIES

    sender = check_id("from", body.get("from"))
    to = body.get("to")
    if not isinstance(to, str) or not to:
        raise InvalidInputError("to", "is required: an agent id, 'label:X', 'tag:X' or '*'")
    if to.startswith((LABEL_PREFIX, TAG_PREFIX)):
        name = to.partition(":")[2]
        if not name or len(name) > MAX_NAME or "\x00" in name:
            raise InvalidInputError("to", f"needs a name of 1-{MAX_NAME} characters after the ':'")
    elif to != BROADCAST_ALL:
        check_id("to", to)
    text = opt_str(body, "body", max_len=2**31)
    if text is None:
        raise InvalidInputError("body", "is required and must be a string")
    meta = obj(body, "meta")
    priority = meta.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise InvalidInputError("meta.priority", f"must be one of {', '.join(PRIORITIES)}")
    if "orchestratorControl" in meta:
        raise InvalidInputError(
            "meta.orchestratorControl",
            "is set by the relay for spawn and action commands; use those endpoints",
        )
    return {
        "sender": sender,
        "to": to,
        "message_type": one_of(body, "type", MESSAGE_TYPES, "message"),
        "subject": opt_str(body, "subject", MAX_SUBJECT),
        "body": text,
        "meta": meta,
    }


def claim(body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/messages/{id}/claim``: who claims, and for how long."""
    from relay.domain.message import MAX_LEASE_SECONDS

    lease = body.get("leaseSeconds")
    if lease is None:
        lease = DEFAULT_LEASE_SECONDS
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease <= MAX_LEASE_SECONDS:
        raise InvalidInputError(
            "leaseSeconds", f"must be a number of seconds above 0 and at most {MAX_LEASE_SECONDS}"
        )
    return {
        "agent_id": check_id("agentId", body.get("agentId")),
        "lease_ms": max(1, round(lease * 1000)),
    }


def claim_holder(body: dict[str, Any]) -> dict[str, Any]:
    """``.../ack`` and ``.../release``: the holder, and optionally the claim it holds."""
    claim_id = body.get("claimId")
    return {
        "agent_id": check_id("agentId", body.get("agentId")),
        "claim_id": None if claim_id is None else check_id("claimId", claim_id),
    }


# -- fleet lifecycle (issue 15) ----------------------------------------------------

MAX_LABELS = 32
MAX_AGENTS_LIMIT = 100_000


def labels(body: dict[str, Any], field: str) -> dict[str, str]:
    """A string map of at most 32 labels (keys and values at most 100 characters)."""
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(field, "must be an object of string labels")
    if len(value) > MAX_LABELS:
        raise InvalidInputError(field, f"must have at most {MAX_LABELS} labels")
    for k, v in value.items():
        if not k or len(k) > MAX_LIST_ITEM or not isinstance(v, str) or len(v) > MAX_LIST_ITEM:
            raise InvalidInputError(
                field, f"labels must map non-empty names to strings of at most {MAX_LIST_ITEM} characters"
            )
    return dict(value)


def capacity(body: dict[str, Any]) -> dict[str, Any]:
    """``maxAgents`` and ``labels`` of a registration."""
    max_agents = _whole(body.get("maxAgents"))
    if max_agents is not None and (
        isinstance(max_agents, bool)
        or not isinstance(max_agents, int)
        or not 1 <= max_agents <= MAX_AGENTS_LIMIT
    ):
        raise InvalidInputError("maxAgents", f"must be an integer from 1 to {MAX_AGENTS_LIMIT}")
    return {"max_agents": max_agents, "labels": labels(body, "labels")}


def heartbeat_load(body: dict[str, Any]) -> dict[str, Any] | None:
    """A heartbeat's optional ``load``: {activeAgents, cpu?, memory?}."""
    value = body.get("load")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError("load", "must be an object {activeAgents, cpu?, memory?}")
    active = _whole(value.get("activeAgents"))
    if isinstance(active, bool) or not isinstance(active, int) or not 0 <= active <= MAX_AGENTS_LIMIT:
        raise InvalidInputError("load.activeAgents", "is required: an integer of at least 0")
    load: dict[str, Any] = {"activeAgents": active}
    for name, hi in (("cpu", 1e6), ("memory", 1.0)):
        x = value.get(name)
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= hi:
            raise InvalidInputError(f"load.{name}", f"must be a number from 0 to {hi:g}")
        load[name] = x
    return load


def deadline_seconds(body: dict[str, Any], most: float) -> float:
    """A request may ask for a shorter deadline than the relay's, never a longer one."""
    value = _whole(body.get("deadlineSeconds"))
    if value is None:
        return most
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError("deadlineSeconds", "must be a whole number of seconds, at least 1")
    return float(min(value, most))  # asking for more than the relay allows gets the relay's


def _whole(value: Any) -> Any:
    """JSON has one number type: ``3.0`` is the integer 3 (JSON Schema agrees); booleans are not."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def progress(body: dict[str, Any]) -> str:
    if body.get("status") != "running":
        raise InvalidInputError("status", "is required: running")
    return "running"


# -- crash loops (issue 15): what a host says about an agent that keeps exiting ----

MAX_RESTARTS_REPORTED = 10_000


def _exit_code(value: Any, field: str, hi: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise InvalidInputError(field, f"must be null or an integer from 0 to {hi}")
    return value


def _exit_fields(value: Any, where: str, status_key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(where, "must be an object")
    at = value.get("at")
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**53:
        raise InvalidInputError(f"{where}.at", "is required: epoch milliseconds")
    return {
        status_key: _exit_code(value.get(status_key), f"{where}.{status_key}", 255),
        "signal": _exit_code(value.get("signal"), f"{where}.signal", 255),
        "at": at,
    }


def crash_report(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A managed agent's optional ``restarts``, ``lastExit`` and ``crashloop`` (relay/host/crashloop.py)."""
    out: dict[str, Any] = {}
    restarts = item.get("restarts")
    if restarts is not None:
        if (
            isinstance(restarts, bool)
            or not isinstance(restarts, int)
            or not 0 <= restarts <= MAX_RESTARTS_REPORTED
        ):
            raise InvalidInputError(
                f"{where}.restarts", f"must be an integer from 0 to {MAX_RESTARTS_REPORTED}"
            )
        out["restarts"] = restarts
    if item.get("lastExit") is not None:
        out["lastExit"] = _exit_fields(item["lastExit"], f"{where}.lastExit", "status")
    loop = item.get("crashloop")
    if loop is not None:
        fields = _exit_fields(loop, f"{where}.crashloop", "exitStatus")
        count = loop.get("restarts")
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 0 <= count <= MAX_RESTARTS_REPORTED
        ):
            raise InvalidInputError(
                f"{where}.crashloop.restarts",
                f"is required: an integer from 0 to {MAX_RESTARTS_REPORTED}",
            )
        out["crashloop"] = {**fields, "restarts": count}
    return out


# -- live output (issue 16, ADR 0031) ---------------------------------------------------
# Kept together so they convert to declarations in one go (openapi_output.py has the schema).

OUTPUT_KINDS = ("output", "snapshot")
MAX_OUTPUT_CHUNKS = 1000
MAX_TERMINAL_SIDE = 10_000


def output_push(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"chunks": [{agentId, kind?, data, reset?, cols?, rows?, at?}]}`` from a host.

    ``data`` is terminal text, escapes and all: any string goes (it never reaches
    the log, and it is JSON-encoded again for viewers)."""
    items = body.get("chunks")
    if not isinstance(items, list):
        raise InvalidInputError("chunks", "is required and must be a list of output chunks")
    if len(items) > MAX_OUTPUT_CHUNKS:
        raise InvalidInputError("chunks", f"must have at most {MAX_OUTPUT_CHUNKS} items")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"chunks[{i}]"
        if not isinstance(item, dict):
            raise InvalidInputError(where, "must be an object")
        kind = item.get("kind")
        if kind is not None and kind not in OUTPUT_KINDS:
            raise InvalidInputError(f"{where}.kind", f"must be one of {', '.join(OUTPUT_KINDS)}")
        chunk: dict[str, Any] = {
            "agentId": check_id(f"{where}.agentId", item.get("agentId")),
            "kind": kind or "output",
        }
        data = item.get("data")
        if not isinstance(data, str):
            raise InvalidInputError(f"{where}.data", "is required and must be a string")
        chunk["data"] = data
        reset = item.get("reset")
        if reset is not None and not isinstance(reset, bool):
            raise InvalidInputError(f"{where}.reset", "must be true or false")
        chunk["reset"] = bool(reset)
        for side in ("cols", "rows"):
            value = _whole(item.get(side))
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TERMINAL_SIDE:
                raise InvalidInputError(
                    f"{where}.{side}", f"must be an integer from 1 to {MAX_TERMINAL_SIDE}"
                )
            chunk[side] = value
        at = _whole(item.get("at"))
        if at is not None:
            if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**53:
                raise InvalidInputError(f"{where}.at", "must be a non-negative integer")
            chunk["at"] = at
        out.append(chunk)
    return out
