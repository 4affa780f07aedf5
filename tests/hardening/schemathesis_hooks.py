"""Schemathesis hooks for the fuzz test (loaded by the CLI through SCHEMATHESIS_HOOKS).

- ``relay-id``: ids are "printable characters without '/' or whitespace"; JSON
  Schema's regex cannot say "printable" (Unicode categories), so the document
  names a format and this strategy generates exactly that.
- ``rejected_requests_append_nothing``: the contract's "a rejected request
  appends nothing to the log", checked on every 4xx by comparing the log head
  before and after the call (the run is sequential: one worker).
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import schemathesis
from hypothesis import strategies as st

RELAY_URL = os.environ["RELAY_FUZZ_URL"]
COUNTS_FILE = os.environ.get("RELAY_FUZZ_COUNTS")

_printable = st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S"], exclude_characters="/")
schemathesis.openapi.format(
    "relay-id",
    st.one_of(
        st.from_regex(r"[a-z0-9][a-z0-9._-]{0,11}", fullmatch=True),
        st.text(_printable, min_size=1, max_size=120),
    ),
)

_state: dict[str, Any] = {"head": None, "calls": 0, "rejected": 0}


def log_head() -> int:
    """The log position the read models are at (equal to the log head when idle)."""
    with urllib.request.urlopen(f"{RELAY_URL}/api/health", timeout=10) as r:
        health = json.load(r)
    for check in health["checks"]:
        if check["name"] == "readModels":
            return int(check["position"])
    raise AssertionError("health has no readModels check")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    _state["head"] = log_head()


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    _state["calls"] += 1
    if 400 <= response.status_code < 500:
        _state["rejected"] += 1
    if COUNTS_FILE:
        with open(COUNTS_FILE, "w") as f:
            json.dump({"calls": _state["calls"], "rejected": _state["rejected"]}, f)


@schemathesis.check
def rejected_requests_append_nothing(ctx: Any, response: Any, case: Any) -> bool | None:
    if not 400 <= response.status_code < 500 or _state["head"] is None:
        return None
    before, after = _state["head"], log_head()
    if after != before:
        raise AssertionError(f"a {response.status_code} answer moved the log head from {before} to {after}")
    return True
