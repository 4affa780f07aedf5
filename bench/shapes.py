"""Decode + validate of a heartbeat and a registration body, per library (ADR 0029). Not a test.

Run from the repository root (about a minute)::

    .venv/bin/pip install pydantic cattrs   # the candidates not chosen (not dependencies)
    .venv/bin/python bench/shapes.py --runs 7

Each candidate turns the same bytes into a checked value with the same limits
(id rule, lengths, ranges, enums, the nesting and 64-bit screen on the raw
bytes), in one process, interleaved:

baseline  orjson.loads + the hand-written checks relay/http/parse.py had before
          ADR 0029 (copied below, as of commit 5038b70)
msgspec   relay.wire.declare.decode into relay.wire.shapes (what the relay runs)
pydantic  pydantic v2 BaseModel.model_validate_json, strict, same limits
cattrs    orjson.loads + cattrs.structure into attrs classes with validators

Each figure is the median over ``--runs`` runs of the best-of-5 mean of
``--number`` calls, timed in CPU seconds of this process (``time.process_time``:
on a shared 2-core machine wall time mostly measures the neighbours); ratios
are to the baseline of the same run.
"""


import argparse
import posixpath
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson

sys.path.insert(0, str(Path(__file__).parents[1]))

from relay.domain.errors import InvalidInputError
from relay.domain.rules import PROVIDERS, check_env_key, check_orchestrator_id
from relay.nesting import MAX_DEPTH, brackets
from relay.wire import shapes as w
from relay.wire.declare import decode

HEARTBEAT = orjson.dumps({"load": {"activeAgents": 3, "cpu": 0.42, "memory": 0.31}})
REGISTRATION = orjson.dumps(
    {
        "id": "gpu-1",
        "hostname": "gpu-1.lab",
        "baseDir": "/srv/work",
        "providers": ["claude", "codex"],
        "envKeys": ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"],
        "maxAgents": 8,
        "labels": {"gpu": "a100", "zone": "eu"},
        "meta": {
            "dirs": ["app", "lib", "docs", "infra"],
            "dirsTruncated": False,
            "daemon": "relay host",
            "version": "0.1.0",
            "pid": 4242,
        },
    }
)

_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))


def _screen(raw: bytes) -> None:
    """The raw-bytes screen every candidate pays (ADR 0011): too deep, or a long integer."""
    if brackets(raw) > MAX_DEPTH or b"0" * 19 in raw.translate(_DIGITS_AS_ZERO):
        raise AssertionError("the benchmark bodies never take the slow path")


# -- baseline: the hand-written checks of relay/http/parse.py before ADR 0029 -------------------


def _opt_str(body: dict[str, Any], field: str, max_len: int = 200) -> str | None:
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


def _req_str(body: dict[str, Any], field: str, max_len: int = 200) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(field, "is required and must be a non-empty string")
    return _opt_str(body, field, max_len) or ""


def _str_list(body: dict[str, Any], field: str, max_items: int = 64, max_len: int = 100) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInputError(field, "must be a list of strings")
    if len(value) > max_items:
        raise InvalidInputError(field, f"must have at most {max_items} items")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > max_len:
            raise InvalidInputError(field, "must be a list of non-empty strings")
    return list(dict.fromkeys(value))


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def baseline_registration(raw: bytes) -> dict[str, Any]:
    _screen(raw)
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise InvalidInputError("body", "must be a JSON object")
    oid = check_orchestrator_id("id", body.get("id"))
    hostname = _req_str(body, "hostname")
    base_dir = _req_str(body, "baseDir", 4096)
    if not posixpath.isabs(base_dir):
        raise InvalidInputError("baseDir", "must be an absolute path")
    providers = _str_list(body, "providers", max_items=len(PROVIDERS)) or list(PROVIDERS)
    for p in providers:
        if p not in PROVIDERS:
            raise InvalidInputError("providers", "must be a subset")
    env_keys = _str_list(body, "envKeys", max_items=1000, max_len=256) or []
    for k in env_keys:
        check_env_key("envKeys", k)
    meta = body.get("meta") or {}
    if not isinstance(meta, dict):
        raise InvalidInputError("meta", "must be a JSON object")
    max_agents = _whole(body.get("maxAgents"))
    if max_agents is not None and (
        isinstance(max_agents, bool) or not isinstance(max_agents, int) or not 1 <= max_agents <= 100_000
    ):
        raise InvalidInputError("maxAgents", "must be an integer from 1 to 100000")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or len(labels) > 32:
        raise InvalidInputError("labels", "must be an object of at most 32 labels")
    for k, v in labels.items():
        if not k or len(k) > 100 or not isinstance(v, str) or len(v) > 100:
            raise InvalidInputError("labels", "labels must map names to strings")
    return {
        "orchestrator_id": oid, "hostname": hostname, "base_dir": posixpath.normpath(base_dir),
        "providers": providers, "env_keys": env_keys, "meta": meta, "max_agents": max_agents,
        "labels": labels,
    }


def baseline_heartbeat(raw: bytes) -> dict[str, Any] | None:
    _screen(raw)
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise InvalidInputError("body", "must be a JSON object")
    value = body.get("load")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError("load", "must be an object")
    active = _whole(value.get("activeAgents"))
    if isinstance(active, bool) or not isinstance(active, int) or not 0 <= active <= 100_000:
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


# -- msgspec: what the relay runs --------------------------------------------------------------


def msgspec_registration(raw: bytes) -> Any:
    return decode(raw, w.OrchestratorRegistration)


def msgspec_heartbeat(raw: bytes) -> Any:
    return decode(raw, w.Heartbeat)


# -- pydantic v2 -------------------------------------------------------------------------------------


def pydantic_candidates() -> tuple[Callable[[bytes], Any], Callable[[bytes], Any]] | None:
    try:
        from pydantic import BaseModel, ConfigDict, Field, field_validator
    except ImportError:
        return None

    id_pattern = w.ID_PATTERN
    name = Annotated[str, Field(max_length=100, min_length=1)]

    class PLoad(BaseModel):
        model_config = ConfigDict(strict=True)
        activeAgents: int = Field(ge=0, le=100_000)
        cpu: float | None = Field(None, ge=0, le=1e6)
        memory: float | None = Field(None, ge=0, le=1)

    class PHeartbeat(BaseModel):
        model_config = ConfigDict(strict=True)
        load: PLoad | None = None

    class PRegistration(BaseModel):
        model_config = ConfigDict(strict=True)
        id: str = Field(min_length=1, max_length=107, pattern=id_pattern)
        hostname: str = Field(min_length=1, max_length=200, pattern=w.NOT_BLANK)
        baseDir: str = Field(min_length=1, max_length=4096, pattern="^/[^\\x00]*$")
        providers: list[Literal["claude", "codex"]] | None = Field(None, min_length=1, max_length=2)
        envKeys: list[Annotated[str, Field(max_length=256, pattern=w.ENV_KEY_PATTERN)]] | None = Field(
            None, max_length=1000
        )
        meta: dict[str, Any] | None = None
        maxAgents: int | None = Field(None, ge=1, le=100_000)
        labels: dict[name, Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=32)

        @field_validator("id")
        @classmethod
        def printable(cls, v: str) -> str:
            check_orchestrator_id("id", v)
            return v

    def registration(raw: bytes) -> Any:
        _screen(raw)
        return PRegistration.model_validate_json(raw)

    def heartbeat(raw: bytes) -> Any:
        _screen(raw)
        return PHeartbeat.model_validate_json(raw)

    return registration, heartbeat


# -- attrs + cattrs ----------------------------------------------------------------------------------


def cattrs_candidates() -> tuple[Callable[[bytes], Any], Callable[[bytes], Any]] | None:
    try:
        import cattrs
    except ImportError:
        return None
    import re

    from attrs import define, field
    from attrs import validators as v

    conv = cattrs.Converter(forbid_extra_keys=False)
    no_bool_int = v.and_(v.instance_of(int), v.not_(v.instance_of(bool)))
    id_re = re.compile(w.ID_PATTERN)

    @define
    class CLoad:
        activeAgents: int = field(validator=[no_bool_int, v.ge(0), v.le(100_000)])
        cpu: float | None = field(default=None, validator=v.optional([v.ge(0), v.le(1e6)]))
        memory: float | None = field(default=None, validator=v.optional([v.ge(0), v.le(1)]))

    @define
    class CHeartbeat:
        load: CLoad | None = None

    @define
    class CRegistration:
        id: str = field(validator=[v.instance_of(str), v.max_len(107), v.matches_re(id_re)])
        hostname: str = field(validator=[v.instance_of(str), v.min_len(1), v.max_len(200)])
        baseDir: str = field(validator=[v.instance_of(str), v.max_len(4096), v.matches_re("/[^\\x00]*")])
        providers: list[str] | None = field(
            default=None,
            validator=v.optional(v.deep_iterable(v.in_(PROVIDERS), v.and_(v.min_len(1), v.max_len(2)))),
        )
        envKeys: list[str] | None = field(
            default=None,
            validator=v.optional(
                v.deep_iterable(v.matches_re(w.ENV_KEY_PATTERN), v.max_len(1000))
            ),
        )
        meta: dict[str, Any] | None = None
        maxAgents: int | None = field(
            default=None, validator=v.optional([no_bool_int, v.ge(1), v.le(100_000)])
        )
        labels: dict[str, str] | None = field(
            default=None,
            validator=v.optional(
                v.deep_mapping(v.max_len(100), v.max_len(100), v.max_len(32))
            ),
        )

        def __attrs_post_init__(self) -> None:
            check_orchestrator_id("id", self.id)

    def registration(raw: bytes) -> Any:
        _screen(raw)
        return conv.structure(orjson.loads(raw), CRegistration)

    def heartbeat(raw: bytes) -> Any:
        _screen(raw)
        return conv.structure(orjson.loads(raw), CHeartbeat)

    return registration, heartbeat


# -- the run ------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--number", type=int, default=20_000, help="calls per timing")
    a = p.parse_args()
    candidates: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {
        "baseline": (baseline_registration, baseline_heartbeat),
        "msgspec": (msgspec_registration, msgspec_heartbeat),
    }
    for label, make in (("pydantic", pydantic_candidates), ("cattrs", cattrs_candidates)):
        got = make()
        if got is None:
            print(f"{label}: not installed, skipped")
        else:
            candidates[label] = got
    for fns in candidates.values():  # every candidate accepts both bodies
        fns[0](REGISTRATION)
        fns[1](HEARTBEAT)
    times: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    for _ in range(a.runs):
        this_run: dict[tuple[str, str], float] = {}
        for label, (reg, hb) in candidates.items():
            for body_name, fn, raw in (("heartbeat", hb, HEARTBEAT), ("registration", reg, REGISTRATION)):
                best = min(
                    timeit.repeat(
                        lambda fn=fn, raw=raw: fn(raw), number=a.number, repeat=5, timer=time.process_time
                    )
                )
                this_run[(label, body_name)] = best / a.number * 1e6
        for key, us in this_run.items():
            times.setdefault(key, []).append(us)
            ratios.setdefault(key, []).append(us / this_run[("baseline", key[1])])
    print(f"decode + validate, µs per body (median of {a.runs} runs), and ÷ baseline in the same run")
    print(f"{'candidate':<10} {'heartbeat':>10} {'ratio':>6} {'registration':>13} {'ratio':>6}")
    for label in candidates:
        hb = (label, "heartbeat")
        reg = (label, "registration")
        print(
            f"{label:<10} {statistics.median(times[hb]):>10.2f} {statistics.median(ratios[hb]):>6.2f} "
            f"{statistics.median(times[reg]):>13.2f} {statistics.median(ratios[reg]):>6.2f}"
        )


if __name__ == "__main__":
    main()
