"""The vocabulary wire shapes are declared in, and the one decoder that reads them.

A wire shape is a msgspec ``Struct`` (``Shape``) whose fields are annotated
kinds. A kind is made once with ``kind()``: its limits (lengths, ranges,
patterns) go into a ``msgspec.Meta``, so msgspec checks them in C while it
decodes and the JSON Schema generated for the OpenAPI document states them; its
``Rule`` carries the message a refusal shows, and optionally a check the schema
cannot state (the id rule's "printable", for one), run after decoding.

``decode()`` turns msgspec's refusals into the contract's
``InvalidInputError("<field path>", "<problem>")``, with the field path in the
wire's names (``agents[1].tmuxSession``) and the problem from the field's
``Rule``. msgspec's error text (``... - at `$.agents[1]```) is read in one
place here, ``_explain``; tests/http/test_shapes.py fails if msgspec changes it.

Decoding is strict (a string is never an integer) except that an integral
number such as ``3.0`` is the integer 3, as in JSON Schema: msgspec refuses
it, and the refusal is retried once with that number made an integer (a slow
path for unusual bodies; the usual one is msgspec alone).

The storable checks of ADR 0011 (nesting depth, integers within 64 bits) run
on the decoded shape, so they name only fields some handler reads; unknown
fields are ignored and never stored.
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, TypeVar, Union

import msgspec
import orjson
from attrs import frozen

from relay.domain.errors import InvalidInputError
from relay.nesting import MAX_DEPTH, big_int_path, brackets, parse_int, too_deep_field

T = TypeVar("T")


@frozen
class Rule:
    """What a refusal of one field says, and a check the JSON Schema cannot state.

    ``problem`` follows the field's name (``"hostname: must be ..."``) and may
    name sibling fields of the raw object as ``{agentId!r}``. ``missing`` is
    said when a required field is absent (default: "is required and <problem>").
    ``check(field, value)`` raises ``InvalidInputError`` (the domain's rules,
    such as ``rules.check_id``, have that signature).
    """

    problem: str
    missing: str | None = None
    check: Callable[[str, Any], Any] | None = None


def kind(
    tp: Any,
    problem: str,
    *,
    missing: str | None = None,
    check: Callable[[str, Any], Any] | None = None,
    **meta: Any,
) -> Any:
    """``tp`` with its limits (``msgspec.Meta`` keywords) and its message. A list's items
    with a ``check`` of their own are checked one by one (``field[i]``)."""
    return Annotated[tp, msgspec.Meta(**meta), Rule(problem, missing, check)]


def limited(tp: Any, **meta: Any) -> Any:
    """``tp`` with limits but no message of its own: a list's item or a map's key or value,
    refused in the words of the container that holds it."""
    return Annotated[tp, msgspec.Meta(**meta)]


def about(tp: Any, description: str, **schema: Any) -> Any:
    """``tp`` described for the document (prose only; limits stay on the kind)."""
    if schema:
        return Annotated[tp, msgspec.Meta(description=description, extra_json_schema=schema)]
    return Annotated[tp, msgspec.Meta(description=description)]


class Shape(msgspec.Struct, rename="camel"):
    """A wire shape: camelCase on the wire, unknown fields ignored, null read as not given."""

    def finish(self) -> None:
        """Rules across fields and normalising, after every field passed its own rule.

        Raise ``InvalidInputError`` naming the field relative to this shape; the
        decoder adds the path of the shape within the body.
        """


def fields_of(shape: Shape, **renamed: str) -> dict[str, Any]:
    """A shape's fields by their Python names (``renamed``: old name to new), for a command."""
    return {renamed.get(name, name): getattr(shape, name) for name in shape.__struct_fields__}


def shape_fields(tp: type[Shape]) -> tuple[msgspec.structs.FieldInfo, ...]:
    return msgspec.structs.fields(tp)


# -- reading annotations ------------------------------------------------------------------


def _strip(tp: Any) -> tuple[Any, Rule | None, bool]:
    """(the bare type, its Rule, nullable) of an annotation such as ``Annotated[X, ...] | None``."""
    rule: Rule | None = None
    nullable = False
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            for m in tp.__metadata__:
                if isinstance(m, Rule):
                    rule = m
            tp = tp.__origin__
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(tp))
            if len(args) != 1:
                return tp, rule, nullable
            tp = args[0]
        else:
            return tp, rule, nullable


def _is_shape(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _item(tp: Any) -> Any:
    args = typing.get_args(tp)
    return args[-1] if args else Any


@functools.cache
def _plan(tp: type[Shape]) -> tuple[tuple[Any, ...], bool]:
    """What to run on a decoded ``tp`` after msgspec: checks and nested shapes, and finish()."""
    steps: list[tuple[Any, ...]] = []
    for f in shape_fields(tp):
        bare, rule, _ = _strip(f.type)
        if rule is not None and rule.check is not None:
            steps.append(("check", f.name, f.encode_name, rule.check))
        if _is_shape(bare):
            if _has_work(bare):
                steps.append(("one", f.name, f.encode_name, bare))
        elif typing.get_origin(bare) is list:
            item, item_rule, _ = _strip(_item(bare))
            if _is_shape(item):
                if _has_work(item):
                    steps.append(("many", f.name, f.encode_name, item))
            elif item_rule is not None and item_rule.check is not None:
                steps.append(("each", f.name, f.encode_name, item_rule.check))
    finishes = tp.finish is not Shape.finish
    return tuple(steps), finishes


def _has_work(tp: type[Shape]) -> bool:
    steps, finishes = _plan(tp)
    return bool(steps) or finishes


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _settle(obj: Any, path: str) -> None:
    steps, finishes = _plan(type(obj))
    for how, attr, name, what in steps:
        value = getattr(obj, attr)
        if value is None:
            continue
        where = _join(path, name)
        if how == "check":
            what(where, value)
        elif how == "each":
            for i, item in enumerate(value):
                what(f"{where}[{i}]", item)
        elif how == "one":
            _settle(value, where)
        else:
            for i, item in enumerate(value):
                _settle(item, f"{where}[{i}]")
    if finishes:
        try:
            obj.finish()
        except InvalidInputError as e:
            problem = e.message[len(e.field) + 2 :]
            raise InvalidInputError(_join(path, e.field), problem) from None


# -- decoding --------------------------------------------------------------------------------


@functools.cache
def _decoder(tp: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(tp)


# Per shape: its decoder and whether anything runs after it (one dict lookup per body: the
# heartbeat path pays a few hundred nanoseconds for all of this).
_READERS: dict[type[Any], tuple[msgspec.json.Decoder[Any], bool]] = {}


def _reader(tp: type[Any]) -> tuple[msgspec.json.Decoder[Any], bool]:
    reader = _READERS.get(tp)
    if reader is None:
        reader = _READERS[tp] = (_decoder(tp), _has_work(tp))
    return reader


# The shortest integer literal that can pass 64 bits has 19 digits. Mapping every
# digit to "0" and looking for 19 zeros in a row runs in C: ~10x a regex.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGITS = b"0" * 19


def decode(raw: bytes, tp: type[T]) -> T:
    """``raw`` JSON as a ``tp``, or ``InvalidInputError`` naming the field and the problem."""
    decoder, settles = _READERS.get(tp) or _reader(tp)
    try:
        obj = decoder.decode(raw)
    except msgspec.ValidationError as e:
        _refuse_unstorable(raw, tp)  # as the fast path: those refusals come first
        obj = _retry(raw, tp, str(e))
    except msgspec.DecodeError as e:
        raise InvalidInputError("body", f"not valid JSON ({e})") from None
    except RecursionError:
        raise InvalidInputError(_deep_field(raw, tp), f"is nested deeper than {MAX_DEPTH} levels") from None
    if settles:
        _settle(obj, "")
    _check_storable(raw, obj, tp)
    return obj


def _decode_problem(e: Exception) -> str:
    text = str(e)
    return text[0].lower() + text[1:] if text else "unreadable"


def _retry(raw: bytes, tp: type[T], text: str) -> T:
    """The slow path after msgspec refused: integral floats as integers, else explain."""
    generic: Any = None
    for _ in range(64):
        detail, segs = _split(text)
        if not _INT_GOT_FLOAT.match(detail):
            break
        if generic is None:
            generic = msgspec.json.decode(raw)
        if not _whole_at(generic, segs):
            break
        try:
            return msgspec.convert(generic, tp)
        except msgspec.ValidationError as e:
            text = str(e)
    raise _explain(raw, tp, text)


def _whole_at(generic: Any, segs: list[str]) -> bool:
    """Make the number at ``segs`` an int if it is integral (JSON Schema: 3.0 is an integer)."""
    parent = _walk(generic, segs[:-1])
    key: Any = segs[-1] if segs else None
    if parent is None or key is None or key == "[...]":
        return False
    if key.startswith("["):
        key = int(key[1:-1])
    try:
        value = parent[key]
    except (KeyError, IndexError, TypeError):
        return False
    if isinstance(value, float) and value.is_integer():
        parent[key] = int(value)
        return True
    return False


_INT_GOT_FLOAT = re.compile(r"^Expected `int( \| null)?`, got `float`$")
_AT = re.compile(r"^(?P<detail>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEG = re.compile(r"\.([^.\[]+)|(\[[0-9]+\]|\[\.\.\.\])")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")


def _split(text: str) -> tuple[str, list[str]]:
    """msgspec's error text as (detail, path segments): ``["agents", "[1]", "cwd"]``."""
    m = _AT.match(text)
    assert m is not None  # the pattern matches any text
    path = m.group("path") or ""
    return m.group("detail"), [a or b for a, b in _SEG.findall(path)]


def _walk(generic: Any, segs: list[str]) -> Any:
    for s in segs:
        try:
            generic = generic[int(s[1:-1])] if s.startswith("[") else generic[s]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return generic


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


def _explain(raw: bytes, tp: type[Any], text: str) -> InvalidInputError:
    """The contract's error for msgspec's refusal ``text`` of ``raw`` as ``tp``."""
    detail, segs = _split(text)
    if detail.startswith("Integer value out of range"):
        _refuse_big_ints(raw, tp)
    missing = _MISSING.match(detail)
    if missing:
        segs = [*segs, missing.group("name")]
    outer = _outer_limit(raw, tp, segs[:-1])
    if outer is not None:
        return outer
    where, rule, bare = _locate(tp, segs)
    if not segs:
        return InvalidInputError("body", "must be a JSON object")
    if rule is None:
        problem = "must be an object" if _is_shape(bare) else _decode_problem(Exception(detail))
    elif missing:
        problem = rule.missing or (
            rule.problem if rule.problem.startswith("is required") else f"is required and {rule.problem}"
        )
    else:
        problem = rule.problem
    if "{" in problem:
        try:
            parent = _walk(msgspec.json.decode(raw), segs[:-1])
        except (msgspec.DecodeError, RecursionError):
            parent = None
        problem = problem.format_map(_Lenient(parent if isinstance(parent, dict) else {}))
    return InvalidInputError(where, problem)


def _outer_limit(raw: bytes, tp: Any, segs: list[str]) -> InvalidInputError | None:
    """A list or map on the way to a refused field that is itself over its length limit.

    msgspec checks a list's items before its length; the contract names the
    outer problem first (1,001 agents is "agents: at most 1000", not a
    complaint about the first agent).
    """
    if not segs or not raw:
        return None
    try:
        generic = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    for n in range(1, len(segs) + 1):
        value = _walk(generic, segs[:n])
        if not isinstance(value, list | dict):
            continue
        where, rule, _ = _locate(tp, segs[:n])
        most = _max_length(tp, segs[:n])
        if rule is not None and most is not None and len(value) > most:
            return InvalidInputError(where, rule.problem)
    return None


def _max_length(tp: Any, segs: list[str]) -> int | None:
    """The ``max_length`` declared on the field at ``segs``."""
    ann: Any = tp
    for s in segs:
        bare, _, _ = _strip(ann)
        if s.startswith("["):
            ann = _item(bare)
        else:
            names = {f.encode_name: f.type for f in shape_fields(bare)} if _is_shape(bare) else {}
            ann = names.get(s, Any)
    most = None
    while True:
        origin = typing.get_origin(ann)
        if origin is Annotated:
            for m in ann.__metadata__:
                if isinstance(m, msgspec.Meta) and m.max_length is not None:
                    most = m.max_length
            ann = ann.__origin__
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return most
            ann = args[0]
        else:
            return most


def _locate(tp: Any, segs: list[str]) -> tuple[str, Rule | None, Any]:
    """The field path, its Rule and the bare type at ``segs`` within ``tp``.

    A field without a Rule of its own (a list's item, a dict's value) is
    explained by the nearest container that has one, under that container's path.
    """
    where = ""
    bare, rule, _ = _strip(tp)
    last: tuple[str, Rule | None] = ("body", rule)
    for s in segs:
        if s.startswith("["):
            nxt = _item(bare)
            if s != "[...]":
                where += s
        else:
            names = {f.encode_name: f.type for f in shape_fields(bare)} if _is_shape(bare) else {}
            nxt = names.get(s, Any)
            where = _join(where, s)
        bare, rule, _ = _strip(nxt)
        if rule is not None:
            last = (where, rule)
    if rule is not None or _is_shape(bare) or last[1] is None:
        return where or "body", rule, bare
    return last[0], last[1], bare


# -- the storable checks (ADR 0011) -------------------------------------------------------------


def _check_storable(raw: bytes, obj: Any, tp: type[Any]) -> None:
    """Refuse what the log could not keep as sent, naming the field.

    A field nested past ``MAX_DEPTH`` would be stored and then break every
    reader; an integer past 64 bits could not be written back by orjson. Both
    are skipped when the bytes cannot hold the problem (C speed).
    """
    deep = brackets(raw) > MAX_DEPTH
    long_digits = _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO)
    if not deep and not long_digits:
        return
    data = msgspec.to_builtins(obj)
    if deep:
        field = too_deep_field(data)
        if field is not None:
            raise InvalidInputError(field, f"is nested deeper than {MAX_DEPTH} levels")
    if long_digits:
        where = big_int_path(data)
        if where is not None:
            raise _big_int(where)


def _refuse_unstorable(raw: bytes, tp: type[Any]) -> None:
    """The storable checks on a body msgspec refused, read generically (a slow path)."""
    if brackets(raw) > MAX_DEPTH:
        where = _deep_field(raw, tp)
        if where != "body" or _too_deep_for_orjson(raw):
            raise InvalidInputError(where, f"is nested deeper than {MAX_DEPTH} levels")
    if _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO):
        _refuse_big_ints(raw, tp)


def _too_deep_for_orjson(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return "depth limit" in e.msg or "recursion" in e.msg.lower()
    return False


def _deep_field(raw: bytes, tp: type[Any]) -> str:
    """The field too deep for msgspec's reader (past ~1,000 levels), if orjson (1,024) reads it."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "body"
    if not isinstance(data, dict) or not _is_shape(tp):
        return "body"
    return too_deep_field(_read_by(tp, data)) or "body"


def _read_by(tp: Any, data: Any) -> Any:
    """``data`` cut down to what ``tp`` reads, at every level (the items of a list of shapes
    too): unknown fields are ignored, so the storable checks must not look into them."""
    bare, _, _ = _strip(tp)
    if _is_shape(bare):
        if not isinstance(data, dict):
            return data
        fields = {f.encode_name: f.type for f in shape_fields(bare)}
        return {k: _read_by(fields[k], v) for k, v in data.items() if k in fields}
    if typing.get_origin(bare) is list and isinstance(data, list):
        item = _item(bare)
        return [_read_by(item, v) for v in data]
    return data


def _big_int(where: str) -> InvalidInputError:
    return InvalidInputError(
        where, "is an integer beyond 64 bits, which cannot be kept exactly; send it as a string"
    )


def _refuse_big_ints(raw: bytes, tp: type[Any]) -> None:
    """Name an integer too long even to read, in a field ``tp`` reads (msgspec does not say which)."""
    try:
        parsed = json.loads(raw, parse_int=parse_int)
    except (ValueError, RecursionError):
        return
    if isinstance(parsed, dict) and _is_shape(tp):
        parsed = _read_by(tp, parsed)
    where = big_int_path(parsed)
    if where is not None:
        raise _big_int(where)


# -- queries -------------------------------------------------------------------------------------

_INT = re.compile(r"-?[0-9]{1,30}")  # ASCII digits only: int() also takes other scripts and "1_0"


def from_query(values: Mapping[str, list[str]], tp: type[T]) -> T:
    """A query's parameters (each name's values) as a ``tp``; each parameter at most once."""
    given: dict[str, Any] = {}
    for f in shape_fields(tp):  # type: ignore[arg-type]
        got = values.get(f.encode_name) or []
        if len(got) > 1:
            raise InvalidInputError(f.encode_name, "give this query parameter once")
        if not got:
            continue
        bare, rule, _ = _strip(f.type)
        value: Any = got[0]
        if bare is int:
            if not _INT.fullmatch(value):
                raise InvalidInputError(f.encode_name, rule.problem if rule else "must be an integer")
            value = int(value)
        given[f.encode_name] = value
    try:
        # Strict: a lax conversion would read ?status=null as "not given".
        obj = msgspec.convert(given, tp)
    except msgspec.ValidationError as e:
        raise _explain(b"", tp, str(e)) from None
    _settle(obj, "")
    return obj


def query_names(tp: type[Shape]) -> Iterator[str]:
    return (f.encode_name for f in shape_fields(tp))
