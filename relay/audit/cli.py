"""``relay audit``: history, past state, verification and export of a relay's log.

Read-only and safe beside a running relay: the SQLite file is opened with
``mode=ro`` (relay.audit.log). The one write is ``verify``'s note of the epochs
it proved (``$XDG_STATE_HOME/relay/verify/``, ADR 0022), outside the data folder.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import orjson
from eventsourcing.utils import resolve_topic

from relay import merkle
from relay.audit.checkpoint import MAX_CHECKPOINT
from relay.audit.checkpoint import parse as parse_checkpoint
from relay.audit.checkpoint import render as render_checkpoint
from relay.audit.epochs import sealed_epochs, tree_leaves
from relay.audit.log import AppLog, LogReader, SqliteLog, iterate
from relay.audit.replay import Replayer, snapshot
from relay.audit.verify import Row, TreeHead, VerifyState, as_notification, oid_bytes, plain_rows, verify
from relay.config import LogLocation, Settings, environment, log_location, state_home
from relay.domain.agent import Agent
from relay.domain.orchestrator import Orchestrator
from relay.domain.rules import orchestrator_of_agent_id
from relay.nesting import STORED_MAX_DEPTH, brackets
from relay.projections.readmodels import ReadModels
from relay.store.transcoder import OrjsonTranscoder

HIDDEN_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic", "token_hash"}
)
TIME_FIELDS = frozenset({"lastSeen", "createdAt", "at", "requestedAt", "startedAt"})
ENTITY_KINDS = ("orchestrator", "agent", "message")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``relay audit ...``."""
    p = sub.add_parser(
        "audit",
        help="replay, inspect and verify a relay's log (read-only)",
        description="Read a relay's event log without changing it: one entity's history, the "
        "read models as of a past point, a full verification, or an export. Safe while the "
        "relay runs.",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the relay's data folder [RELAY_DATA] (./relay-data)",
    )
    p.add_argument("--store", choices=("sqlite", "postgres"), default=None, help="[RELAY_STORE]")
    p.add_argument("--postgres-dsn", default=None, help="[RELAY_POSTGRES_DSN]")
    a = p.add_subparsers(dest="audit_command", metavar="WHAT", required=True)

    h = a.add_parser("history", help="the timeline of one agent or orchestrator")
    h.add_argument("entity_id", metavar="ENTITY_ID", help="an agent or orchestrator id")
    h.add_argument("--json", action="store_true", help="one JSON object per event")
    h.set_defaults(func=cmd_history)

    s = a.add_parser("state", help="the read models as of a past point, as JSON")
    s.add_argument(
        "--at",
        required=True,
        metavar="POSITION|ISO-TIME",
        help="a log position, or a time such as 2026-05-01T12:00:00Z (no offset means UTC): "
        "the state after every event recorded at or before it",
    )
    s.add_argument("--pretty", action="store_true", help="indent the JSON")
    s.set_defaults(func=cmd_state)

    v = a.add_parser(
        "verify",
        help="rebuild from position 0 and check positions, versions, seals and the checkpoint",
    )
    v.add_argument(
        "--expect",
        metavar="POSITION:HASH",
        default=None,
        help="also require the chain at POSITION to be HASH (a value you kept elsewhere)",
    )
    v.add_argument(
        "--full",
        action="store_true",
        help="check every epoch and rebuild the read models, even those an earlier run verified",
    )
    v.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help="where verify remembers the epochs it proved "
        "($XDG_STATE_HOME/relay/verify/<hash of DIR>.json; never inside the data folder)",
    )
    v.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="FILE",
        help="also prove the log is an append-only extension of this checkpoint "
        "(from `relay audit checkpoint`)",
    )
    v.set_defaults(func=cmd_verify)

    k = a.add_parser(
        "checkpoint",
        help="print a tree head over the sealed epochs (C2SP tlog-checkpoint) to keep elsewhere",
    )
    k.add_argument(
        "--origin", default=None, help="the log's name in the checkpoint (relay-log/<epoch 1 root>)"
    )
    k.add_argument(
        "--proof-from",
        type=Path,
        default=None,
        metavar="FILE",
        help="instead, print the RFC 9162 consistency proof from that older checkpoint to today's "
        "(one base64 hash a line) for a third party's own verifier",
    )
    k.set_defaults(func=cmd_checkpoint)

    e = a.add_parser("export", help="every event, one JSON object per line (streaming)")
    e.add_argument("--format", choices=("jsonl",), default="jsonl")
    e.add_argument("--output", "-o", type=Path, default=None, help="a file (default stdout)")
    e.add_argument("--after", type=int, default=0, help="only events after this position")
    e.set_defaults(func=cmd_export)


# -- opening the log ----------------------------------------------------------------


def _location(args: argparse.Namespace) -> LogLocation:
    """The log the flags name, else the one ``RELAY_*`` names, else ``relay serve``'s default."""
    return log_location(
        environment(), store=args.store, data_dir=args.data, postgres_dsn=args.postgres_dsn
    )


def _data_dir(args: argparse.Namespace) -> Path:
    return _location(args).data_dir


def _store(args: argparse.Namespace) -> str:
    return _location(args).store


def open_log(args: argparse.Namespace) -> tuple[LogReader, bool]:
    """The log to read (archived positions first: relay.store.reader), and whether
    its positions are gap-free (SQLite, where only thinning leaves holes)."""
    from relay.store.archive import Archive, FileSegments, open_archive
    from relay.store.reader import LogReader as ReadThrough

    where = _location(args)
    if where.store == "postgres":
        from relay.application import RelayApp
        from relay.store import store_env

        settings = Settings(
            store="postgres", postgres_dsn=where.postgres_dsn, data_dir=where.data_dir
        )
        app = RelayApp(store_env(settings))
        return ReadThrough(AppLog(app), open_archive(app, None)), False
    folder = where.data_dir
    live = SqliteLog(folder)
    archive = Archive(FileSegments(folder, create=False))  # read-only: never creates the folder
    archive.refresh()
    return ReadThrough(live, archive), True


def _fail(message: str) -> int:
    print(f"relay audit: {message}", file=sys.stderr)
    return 2


# -- history -----------------------------------------------------------------------------


def _aggregates(entity_id: str) -> list[tuple[str, str, Any]]:
    out = [
        ("orchestrator", entity_id, Orchestrator.create_id(entity_id)),
        ("agent", entity_id, Agent.create_id(entity_id)),
    ]
    oid = orchestrator_of_agent_id(entity_id)  # an orchestrator's own agent record follows it
    if oid is not None:
        out.append(("orchestrator", oid, Orchestrator.create_id(oid)))
    return out


def entity_timeline(
    log: LogReader, kind: str, natural_id: str, aggregate_id: Any
) -> Iterator[dict[str, Any]]:
    """Each event of one aggregate with what it changed in that entity's record."""
    rm = ReadModels()
    after = 0
    before = _view(rm, kind, natural_id)
    while True:
        notes, nxt = log.of_aggregate(aggregate_id, after, 1000)
        if not notes:
            return
        for n in notes:
            event = log.decode(n)
            rm.apply(n.id, event)
            now = _view(rm, kind, natural_id)
            yield {
                "position": n.id,
                "at": event.__dict__.get("at"),
                "type": n.topic,
                "kind": kind,
                "id": natural_id,
                "changes": _diff(before, now),
            }
            before = now
        after = nxt


def _view(rm: ReadModels, kind: str, natural_id: str) -> dict[str, Any] | None:
    if kind == "agent":
        a = rm.agents.get(natural_id)
        return orjson.loads(orjson.dumps(a)) if a is not None else None
    o = rm.orchestrators.get(natural_id)
    if o is None:
        return None
    view = dict(o)
    view["commands"] = {c["id"]: c for c in rm.commands_of(natural_id)}
    return orjson.loads(orjson.dumps(view))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """One key per field; an orchestrator's commands one level deeper
    (``commands.<id>.status``), so a command's change reads as that field's change."""
    if not isinstance(d, dict) or (prefix and not d):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if key == "commands" and isinstance(v, dict):
            for cid, command in v.items():  # none yet: nothing to say (not "{} → null")
                out.update(_flatten(command, f"commands.{cid}"))
        elif isinstance(v, dict) and v and prefix.startswith("commands"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """``{field: [old, new]}``; a command that appears or goes is one entry holding it whole."""
    if before is None and after is None:
        return {}
    if after is None:
        return {"(removed)": [True, None]}
    b, a = _flatten(before or {}), _flatten(after)
    changes = {k: [b.get(k), a.get(k)] for k in sorted(set(a) | set(b)) if b.get(k) != a.get(k)}
    old_commands = (before or {}).get("commands") or {}
    new_commands = after.get("commands") or {}
    for cid in sorted(set(old_commands) ^ set(new_commands)):
        head = f"commands.{cid}"
        changes = {k: v for k, v in changes.items() if k != head and not k.startswith(head + ".")}
        changes[head] = [old_commands.get(cid), new_commands.get(cid)]
    if before is None:
        return {"(created)": [None, True], **changes}
    return changes


def _fmt_time(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


MAX_VALUE = 72  # characters of one value on a history line; longer ones are summarised
LINE_WIDTH = 120  # a history line wraps its changes onto indented lines past this


def _fmt_value(key: str, value: Any) -> str:
    """A value as one short, printable token (never raw control characters)."""
    if key.rsplit(".", 1)[-1] in TIME_FIELDS and isinstance(value, int):
        return _fmt_time(value)[11:]
    if isinstance(value, str) and value and value.isprintable() and " " not in value:
        text = value
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        # Managed agents and the like: name each by its id rather than print every field.
        names = [str(v.get("agentId") or v.get("id") or "{…}") for v in value]
        text = "[" + ", ".join(names) + "]"
    else:
        text = orjson.dumps(value).decode()
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _fmt_command(cid: str, new: Any) -> list[str]:
    """A command that appeared (summarised by the fields an operator looks for) or went."""
    short = cid[:8]
    if new is None:
        return [f"command {short} removed"]
    if not isinstance(new, dict):
        return [f"command {short}={_fmt_value('', new)}"]
    fields = ("kind", "action", "provider", "cwd", "status", "requestedBy")
    parts = [f"{k}={_fmt_value(k, new[k])}" for k in fields if new.get(k) not in (None, "")]
    return [f"command {short} added: " + (parts[0] if parts else "{}"), *parts[1:]]


def _fmt_parts(changes: dict[str, Any]) -> list[str]:
    """Each change as one ``key old → new`` (or ``key=value`` when new) item; the
    changes of one command follow a single ``command <id>:`` prefix."""
    if "(removed)" in changes:
        return ["removed"]
    parts = []
    created = "(created)" in changes
    current_command = None
    for key, (old, new) in changes.items():
        if key == "(created)":
            continue
        if key.startswith("commands."):
            cid, _, field = key[len("commands.") :].partition(".")
            if not field:
                parts.extend(_fmt_command(cid, new))
                current_command = None
                continue
            prefix = "" if cid == current_command else f"command {cid[:8]}: "
            current_command = cid
            key, old_key = prefix + field, field
        else:
            current_command = None
            old_key = key
        if created or old is None:
            parts.append(f"{key}={_fmt_value(old_key, new)}")
        else:
            parts.append(f"{key} {_fmt_value(old_key, old)} → {_fmt_value(old_key, new)}")
    if not parts:
        parts = ["no visible change"]
    if created:
        parts[0] = "created: " + parts[0]
    return parts


def _fmt_changes(changes: dict[str, Any]) -> str:
    return ", ".join(_fmt_parts(changes))


def _history_lines(head: str, parts: list[str], indent: int = 11) -> list[str]:
    """``head`` and the changes, packed into lines of at most ``LINE_WIDTH`` characters
    (a single change longer than that keeps a line of its own)."""
    lines: list[str] = []
    line = head
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "")
        if line.strip() and len(line) + 1 + len(piece) > LINE_WIDTH and line != head:
            lines.append(line)
            line = " " * indent
        line = f"{line}{piece}" if line.endswith(" ") else f"{line} {piece}"
    lines.append(line)
    return lines


def cmd_history(args: argparse.Namespace) -> int:
    try:
        return _history(args)
    except BrokenPipeError:  # e.g. | head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _history(args: argparse.Namespace) -> int:
    try:
        log, _ = open_log(args)
    except FileNotFoundError as e:
        return _fail(str(e))
    out = sys.stdout
    found = False
    for kind, natural_id, agg in _aggregates(args.entity_id):
        rows = entity_timeline(log, kind, natural_id, agg)
        first = True
        for row in rows:
            found = True
            if args.json:
                out.write(orjson.dumps(row).decode() + "\n")
                continue
            if first:
                out.write(f"{kind} {natural_id}\n")
                first = False
            head = f"{row['position']:>9}  {_fmt_time(row['at'])}  {row['type']:<30}"
            out.write("\n".join(_history_lines(head, _fmt_parts(row["changes"]))) + "\n")
    if not found:
        return _fail(f"no agent or orchestrator {args.entity_id!r} in the log")
    return 0


# -- state --at ---------------------------------------------------------------------------


def parse_point(text: str) -> int | datetime:
    """A position (digits) or an ISO time (naive means UTC)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--at: {text!r} is neither a position nor an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def state_at_time(log: LogReader, when: datetime) -> ReadModels:
    """The read models after every event stamped at or before ``when`` (in log order)."""
    rm = ReadModels()
    for n in iterate(log):
        event = log.decode(n)
        stamp = getattr(event, "timestamp", None)
        if isinstance(stamp, datetime) and stamp > when:
            break
        rm.apply(n.id, event)
    return rm


def cmd_state(args: argparse.Namespace) -> int:
    try:
        point = parse_point(args.at)
        log, _ = open_log(args)
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    if isinstance(point, int):
        head = log.head()
        if point > head:
            return _fail(f"--at: position {point} is after the newest position ({head})")
        folding = log.folding() if hasattr(log, "folding") else log  # thinned runs: their ends
        rm = Replayer(folding, every=2**62).state_at(point)  # one question: no anchors to keep
        body = snapshot(rm)
        body["position"] = point
    else:
        rm = state_at_time(log.folding() if hasattr(log, "folding") else log, point)
        body = snapshot(rm)
    option = orjson.OPT_INDENT_2 if args.pretty else 0
    sys.stdout.buffer.write(orjson.dumps(body, option=option) + b"\n")
    return 0


# -- verify ---------------------------------------------------------------------------------


def default_state_path(data_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """Where verify remembers what it proved for ``data_dir`` unless ``--state`` says.

    Outside the data folder, so that ``relay audit`` only ever reads a folder a
    relay may be running on (issue 12): ``$XDG_STATE_HOME/relay/verify/`` (by
    default ``~/.local/state/relay/verify/``), one file per data folder, named
    by a hash of its resolved path.
    """
    base = state_home(environment() if env is None else env)
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:20]
    return base / "relay" / "verify" / f"{key}.json"


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state is not None else default_state_path(_data_dir(args))


def _read_checkpoint(path: Path) -> TreeHead:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CHECKPOINT + 1)
        return parse_checkpoint(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"--checkpoint {path}: {e}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    expect = None
    if args.expect:
        pos, _, value = args.expect.partition(":")
        if not pos.isdigit() or len(value) != 64:
            return _fail("--expect must be POSITION:HASH (64 hex digits)")
        expect = (int(pos), value.lower())
    state_path = _state_path(args)
    state = None
    try:
        tree_head = _read_checkpoint(args.checkpoint) if args.checkpoint is not None else None
        if not args.full and state_path.exists():
            state = VerifyState.from_json(state_path.read_bytes()[: 64 * 1024 * 1024])
    except (OSError, ValueError) as e:
        return _fail(f"{e} (use --full to verify from scratch)" if "state" in str(e) else str(e))
    try:
        log, gapless = open_log(args)
    except FileNotFoundError as e:
        return _fail(str(e))
    bar = Progress("verified") if sys.stderr.isatty() else None
    data_dir = _data_dir(args) if _store(args) == "sqlite" else None
    report = verify(log, data_dir, gapless, expect, bar.update if bar else None, state, tree_head)
    if bar:
        bar.done()
    ep = report.epochs
    if report.problems:
        first = report.problems[0]
        print(f"FAIL at position {first.position}{_in_epoch(first)}: {first.message}")
        for p in report.problems[1:]:
            print(f"  also at position {p.position}{_in_epoch(p)}: {p.message}")
        return 1
    print(
        f"OK: {report.events} events read up to position {report.head}; "
        f"{report.seals} seals verified, the last covering up to position {report.last_sealed}"
        + (f" (chain {report.last_hash})" if report.last_hash else "")
    )
    if ep is not None:
        print(
            f"    epochs: {ep.sealed} sealed; {ep.checked} recomputed from their events"
            + (f", {ep.thinned} from their kept events and subtree hashes" if ep.thinned else "")
            + (f", {ep.trusted} proven by an earlier run (roots unchanged)" if ep.trusted else "")
            + f"; the open epoch starts at position {ep.open_from}"
        )
        if ep.sealed:
            print(f"    tree head: {ep.tree_size} epochs, root {base64.b64encode(ep.tree_root).decode()}")
        if ep.checkpoint is not None:
            print(
                f"    the log is an append-only extension of the checkpoint "
                f"({ep.checkpoint.size} epochs, origin {ep.checkpoint.origin})"
            )
    unsealed = report.head - report.last_sealed
    if unsealed > 0:
        print(f"    {unsealed} newer positions are not sealed yet (the tamper evidence stops there)")
    if report.checkpoint is not None:
        print(f"    the rebuilt read models equal the relay's checkpoint at position {report.checkpoint}")
    elif ep is not None and ep.trusted:
        print("    read models not rebuilt (incremental run; --full rebuilds them from position 0)")
    elif ep is not None and ep.thinned:
        print("    read models not compared: thinned heartbeats cannot rebuild lastSeen exactly")
    if ep is not None and ep.state is not None:
        try:
            _write_state(state_path, ep.state.to_json())
        except OSError as e:
            print(f"    (could not remember the verified epochs in {state_path}: {e})")
    return 0


def _in_epoch(p: Any) -> str:
    return f" in epoch {p.epoch}" if getattr(p, "epoch", None) else ""


def _write_state(path: Path, data: bytes) -> None:
    """Atomically: a crash leaves the old state or the new, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- checkpoint ------------------------------------------------------------------------------


def cmd_checkpoint(args: argparse.Namespace) -> int:
    try:
        log, _ = open_log(args)
    except FileNotFoundError as e:
        return _fail(str(e))
    try:
        epochs = sealed_epochs(log)
        if args.proof_from is not None:
            old = _read_checkpoint(args.proof_from)
            leaves = tree_leaves(epochs)
            if old.size > len(leaves):
                return _fail(f"the checkpoint covers {old.size} epochs; the log has {len(leaves)} sealed")
            for h in merkle.consistency_proof(old.size, leaves):
                print(base64.b64encode(h).decode())
            return 0
        if not epochs:
            return _fail("no epoch is sealed yet, so there is nothing for a checkpoint to cover")
        text = render_checkpoint(epochs, args.origin)
    except ValueError as e:
        return _fail(str(e))
    sys.stdout.write(text)
    print(
        f"(covers epochs 1-{len(epochs)}, positions 1-{epochs[-1].last}; keep it where this host "
        "cannot write, check later with `relay audit verify --checkpoint FILE`)",
        file=sys.stderr,
    )
    return 0


# -- export ------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, position: int, head: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and position < head:
            return
        self.last = now
        pct = 100.0 * position / head if head else 100.0
        filled = int(pct / 4)
        rate = position / max(now - self.t0, 1e-9)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (25 - filled)}] {pct:5.1f}%  {self.verb} up to "
            f"{position}/{head}  {rate:,.0f}/s"
        )
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


def export_lines(
    log: LogReader, out: IO[bytes], after: int = 0, bar: Progress | None = None, fast: bool = True
) -> int:
    """Write every event after ``after`` as one JSON line; constant memory.

    ``fast`` (the default) builds each line from the stored state (orjson bytes,
    ADR 0001) without making a domain event: that is what takes export over an
    archive past 100,000 events/s (issue 14). An event the domain would change on
    the way in (an older ``class_version`` to upcast, a body nested past the limit
    to clip) or a log whose mapper is not plain orjson takes the domain path, so
    the output is the same either way (tests/audit/test_export_fast.py).
    """
    head = log.head()
    lines: list[bytes] = []  # written a thousand at a time; what is done is written on an error too
    try:
        count = _export_into(log, lines, out, after, head, bar, fast)
    finally:
        if lines:
            lines.append(b"")
            out.write(b"\n".join(lines))
    if bar is not None:
        bar.update(head, head)
        bar.done()
    return count


def _export_into(
    log: LogReader,
    lines: list[bytes],
    out: IO[bytes],
    after: int,
    head: int,
    bar: Progress | None,
    fast: bool,
) -> int:
    """export_lines' loop: lines not yet written are left in ``lines``."""
    # Grows with entities, not with the log. An entity created before ``after`` is
    # named by looking its creation up, so a partial export says what a full one says.
    # Keyed by the aggregate id's 16 bytes (archived rows hold those, live ones its text).
    entities: dict[bytes, tuple[str | None, str | None, str]] = {}
    # The class_version a stored event must have to be shown as stored (None: decode it).
    versions: dict[str, int | None] = {}
    if fast and not _plain_orjson(log):
        fast = False
    dumps, loads = orjson.dumps, orjson.loads
    hidden = HIDDEN_FIELDS
    count = 0
    for rows in (plain_rows(log, after, head) if fast else _notification_rows(log, after, head)):
        for row in rows:
            position, oid, version, topic, data = row
            state: dict[str, Any] | None = None
            if fast:
                current = versions.get(topic, 0)
                if current == 0:
                    current = versions[topic] = _class_version(topic)
                # The mapper would clip a body nested too deep, or upcast an older class_version.
                if current is not None and (
                    len(data) <= STORED_MAX_DEPTH or brackets(data) <= STORED_MAX_DEPTH
                ):
                    state = loads(data)
                    if state.pop("class_version", 1) < current:  # type: ignore[union-attr]
                        state = None
            if state is None:
                state = log.decode(as_notification(row)).__dict__
            key = oid_bytes(oid)
            if version == 1:  # a creation names its entity by its natural id
                entity = entities[key] = _entity(_named(state), key)
            else:
                entity = entities.get(key)  # type: ignore[assignment]
                if entity is None:
                    entity = entities[key] = _entity(_named_by_creation(log, UUID(bytes=key)), key)
            line = {
                "position": position,
                "type": topic,
                "entityKind": entity[0],
                "entityId": entity[1],
                "originatorId": entity[2],
                "originatorVersion": version,
                "at": state.get("at"),
                "data": {_camel(k): v for k, v in state.items() if k not in hidden},
            }
            lines.append(dumps(line))
            count += 1
            if count % 1000 == 0:
                lines.append(b"")
                out.write(b"\n".join(lines))
                lines.clear()
                if bar is not None and count % 5000 == 0:
                    bar.update(position, head)
    return count


def _notification_rows(log: LogReader, after: int, head: int) -> Iterator[list[Row]]:
    """The domain path's reading: the log's own ``select`` (what export read before issue 14)."""
    batch: list[Row] = []
    for n in iterate(log, after, head):
        batch.append((n.id, n.originator_id, n.originator_version, n.topic, n.state))
        if len(batch) == 5000:
            yield batch
            batch = []
    if batch:
        yield batch


def _entity(named: tuple[str, str] | None, oid: bytes) -> tuple[str | None, str | None, str]:
    """An export line's (entityKind, entityId, originatorId), made once per entity."""
    text = str(UUID(bytes=oid))
    return (named[0], named[1], text) if named else (None, None, text)


def _plain_orjson(log: LogReader) -> bool:
    """Whether the log's stored states are the bare orjson of the events' fields (ADR 0001):
    no cipher, no compressor, our transcoder; only then can export read them as they are."""
    mapper = getattr(log, "mapper", None)
    return (
        mapper is not None
        and getattr(mapper, "cipher", None) is None
        and getattr(mapper, "compressor", None) is None
        and isinstance(getattr(mapper, "transcoder", None), OrjsonTranscoder)
    )


def _class_version(topic: str) -> int | None:
    """The event class's class_version (None: an unknown topic, the domain path says why)."""
    try:
        return int(getattr(resolve_topic(topic), "class_version", 1))
    except Exception:
        return None


def _named(state: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, natural id) from a creation event's fields."""
    for kind in ENTITY_KINDS:
        natural = state.get(f"{kind}_id")
        if isinstance(natural, str):
            return kind, natural
    return None


def _named_by_creation(log: LogReader, aggregate_id: Any) -> tuple[str, str] | None:
    """The name an aggregate's first event gave it, read from the log (indexed on SQLite;
    through the library's per-aggregate query on other stores)."""
    app = getattr(log, "app", None)
    if app is not None:
        found = list(app.recorder.select_events(aggregate_id, lte=1, limit=1))
    else:
        found, _ = log.of_aggregate(aggregate_id, 0, 1)
    if not found or found[0].originator_version != 1:
        return None
    return _named(log.decode(found[0]).__dict__)


@functools.cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        log, _ = open_log(args)
    except FileNotFoundError as e:
        return _fail(str(e))
    bar = Progress("exported") if sys.stderr.isatty() else None
    if args.output is not None:
        with open(args.output, "wb") as f:
            export_lines(log, f, args.after, bar)
    else:
        try:
            export_lines(log, sys.stdout.buffer, args.after, bar)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # e.g. | head: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
