"""Replay for audit: the log's past, read-only.

``relay audit`` (relay.audit.cli) reads a data folder without writing to it;
``relay.audit.replay`` answers "the read models as of position P" for both
the CLI and the relay's own ``?at=`` and stream resumes; ``relay.chain``
and ``relay.audit.sealer`` are the tamper evidence (docs/audit.md).
"""

from __future__ import annotations

import argparse


def add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``relay audit`` (imported lazily: ``relay serve`` never needs it)."""
    from relay.audit.cli import add_parser

    add_parser(sub)
