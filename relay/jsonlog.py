"""Structured logs: one JSON object a line (``relay serve --log-format json``).

For log shippers (Loki, CloudWatch, journald with a JSON parser) that index
fields rather than grep text. Each line has ``ts`` (ISO 8601, UTC, ms),
``level``, ``logger``, ``msg`` (the formatted message), ``exc`` when there is
a traceback, plus whatever was passed in ``extra=``.

Both formats escape control characters in everything a log line quotes: a
label, a path or a header can come from a client, and written raw a newline
forges a log line and an ANSI escape rewrites the operator's terminal. A
record is then always one line, except a traceback, whose continuation lines
are indented so that nothing in it can pass for a record of its own.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls and DEL (terminal escapes: ESC, CSI U+009B), line and paragraph
# separators, and the bidirectional overrides that make text read differently than it is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escaped, text)


def escape_block(text: str) -> str:
    """A traceback: escaped line by line, continuation lines indented under the record."""
    return "\n".join("  " + escape(line) for line in text.splitlines())


def _escape_lines(text: str) -> str:
    """Escaped, but newlines kept: JSON encodes them, and a traceback reads better in lines."""
    return "\n".join(escape(line) for line in text.split("\n"))


def _escape_value(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {escape(str(k)): _escape_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_value(v) for v in value]
    return escape(str(value))


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with control characters escaped; one line a record (tracebacks indented)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return escape_block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return escape_block(stack_info)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": escape(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[escape(key)] = _escape_value(value)
        if record.exc_info:
            out["exc"] = _escape_lines(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = _escape_lines(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Root logging for ``relay serve``: ``fmt`` is ``text`` or ``json``; logs go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
