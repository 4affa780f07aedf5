"""Handlers parse, call one use case or one query, and shape the answer (issue 13, ADR 0040).

The import contract ``handlers-ask-queries`` keeps the handler modules from
importing the read models' modules; this keeps them from reaching the read
models through the service object (``svc(request).rm.agents.get(...)``),
which no import shows. The one thing a handler may do with ``.rm`` is hand
it to ``Queries``.
"""

from __future__ import annotations

import ast

from tests.support.sourcescan import ROOT, offending_lines

HTTP = ROOT / "relay" / "http"
# Not handlers: the stream's hub anchors its replayer on the live read models
# (relay.http.sse.hub), and past.py is where ``?at=`` read models come from.
NOT_HANDLERS = {"relay/http/sse/hub.py", "relay/http/past.py"}


def reaches_in(source: str) -> list[int]:
    """Lines that use ``<x>.rm`` other than as the argument of ``Queries(...)``."""
    tree = ast.parse(source)
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Queries":
            allowed.update(id(a) for a in node.args)
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "rm" and id(node) not in allowed
    )


def test_handlers_reach_the_read_models_only_through_queries() -> None:
    found = offending_lines(HTTP, NOT_HANDLERS, reaches_in)
    assert found == {}, f"ask relay.projections.queries.Queries instead; found {found}"


def test_the_scan_sees_a_handler_reaching_in() -> None:
    bad = "def h(request):\n    return svc(request).rm.agents.get('a')\n"
    assert reaches_in(bad) == [2]
    assert reaches_in("def h(s):\n    rm = s.rm\n    return rm.commands\n") == [2]
    assert reaches_in("def h(s):\n    return Queries(s.rm).agent('a')\n") == []
