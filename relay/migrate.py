"""``relay migrate --from sqlite:DIR --to postgres:DSN``: copy a log, position for position.

Every stored event is copied as it is stored (the same bytes, topic, aggregate
version) *and at the same position*: the rows are written with their
notification ids (PostgreSQL ``COPY``), then the id sequence is moved past
them. So SSE clients' ``Last-Event-ID``, read-model checkpoints and the audit
seals (which chain positions) stay valid on the copy, and ``relay audit
verify`` passes there.

Batches are one transaction each, taken under the same table lock the
relay's writes take. An interrupted migration is resumed by running it again:
the copy must then be a prefix of the source (checked), and continues after
its last position. At the end both logs are read again and folded into the
audit chain's rolling hash; equal hashes mean equal order and content.

Snapshots are not copied: they are a cache, and the relay takes new ones as
aggregates grow. Stop the relays on both sides first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relay.application import RelayApp
from relay.config import Settings
from relay.store import SQLITE_FILE, PostgresDriverMissingError, require_postgres_driver, store_env

BATCH = 5_000


class MigrationError(Exception):
    """Raised when the source or target cannot be used; the message says why."""


def add_migrate_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``relay migrate``, hooked into relay.cli."""
    p = sub.add_parser(
        "migrate",
        help="copy a relay log from SQLite to PostgreSQL",
        description="Copy every event of a SQLite relay log to PostgreSQL, in order, at the same "
        "positions, with the same bytes; then check both logs fold to the same hash. Stop the "
        "relays first. Running it again resumes an interrupted copy.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:DIR",
                   help="the data folder of the SQLite relay (the one given to --data)")
    p.add_argument("--to", dest="target", required=True, metavar="postgres:DSN",
                   help="the PostgreSQL DSN the relays will use (--postgres-dsn)")
    p.add_argument("--batch", type=int, default=BATCH, help=f"events per transaction ({BATCH})")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        require_postgres_driver()
    except PostgresDriverMissingError as e:
        print(f"relay migrate: {e}", file=sys.stderr)
        return 2
    try:
        result = migrate(args.source, args.target, batch=max(1, args.batch), progress=progress)
    except MigrationError as e:
        print(f"relay migrate: {e}", file=sys.stderr)
        return 1
    print(
        f"copied {result['copied']} events ({result['total']} in the log, head {result['head']}); "
        f"both logs hash to {result['hash']}"
    )
    return 0


def _source_app(spec: str) -> RelayApp:
    kind, _, where = spec.partition(":")
    if kind != "sqlite" or not where:
        raise MigrationError(f"--from must be sqlite:DIR, not {spec!r}")
    folder = Path(where)
    if folder.is_file():
        folder = folder.parent
    if not (folder / SQLITE_FILE).exists():
        raise MigrationError(f"no relay log at {folder / SQLITE_FILE}")
    from relay.audit.log import AppLog
    from relay.store.archive import open_archive
    from relay.store.reader import LogReader

    app = RelayApp(store_env(Settings(data_dir=folder)))
    # Archived epochs are copied too (into the target's live table; its own
    # archiver archives them again there).
    app.relay_reader = LogReader(AppLog(app), open_archive(app, folder, create=False))  # type: ignore[attr-defined]
    return app


def _target(spec: str) -> tuple[RelayApp, Any]:
    from relay.store.postgres import DsnTarget

    kind, _, dsn = spec.partition(":")
    if kind not in ("postgres", "postgresql") or not dsn:
        raise MigrationError(f"--to must be postgres:DSN, not {spec!r}")
    if kind == "postgresql":  # "postgresql://..." was given whole
        dsn = spec
    try:
        target = DsnTarget(dsn)
        app = RelayApp(store_env(Settings(store="postgres", postgres_dsn=dsn)))
    except ValueError as e:
        raise MigrationError(str(e)) from None
    except Exception as e:  # the library's OperationalError and friends
        raise MigrationError(f"cannot open {DsnTarget(dsn).describe()}: {e}") from None
    return app, target


def _same(a: Any, b: Any) -> bool:
    return (
        a.id == b.id
        and str(a.originator_id) == str(b.originator_id)
        and a.originator_version == b.originator_version
        and a.topic == b.topic
        and bytes(a.state) == bytes(b.state)
    )


def _pages(app: RelayApp, after: int, batch: int) -> Iterator[list[Any]]:
    """The log in pages, archived positions included (relay.store.reader)."""
    reader = getattr(app, "relay_reader", None)
    while True:
        if reader is not None:
            page = reader.select(after, batch)
        else:
            page = list(app.recorder.select_notifications(start=after, limit=batch, inclusive_of_start=False))
        if not page:
            return
        yield page
        after = page[-1].id


def migrate(source: str, target: str, batch: int = BATCH,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Copy the log; returns counts and the common rolling hash (hex)."""
    import psycopg  # the postgres extra; imported here so `relay --help` lists migrate without it
    from psycopg import sql

    from relay import chain

    src = _source_app(source)
    dst, where = _target(target)
    try:
        total_head = src.recorder.max_notification_id() or 0
        done = dst.recorder.max_notification_id() or 0
        if done:
            mine = dst.recorder.select_notifications(start=done, limit=1)
            theirs = src.relay_reader.select(done - 1, 1)  # type: ignore[attr-defined]
            if not (mine and theirs and _same(mine[0], theirs[0])):
                raise MigrationError(
                    f"{where.describe()} already holds a log that is not a copy of this one "
                    f"(position {done} differs); use an empty database or schema"
                )
            progress(f"resuming: the target already holds positions up to {done}")
        table = where.qualified_table
        copy_sql = sql.SQL(
            "COPY {} (notification_id, originator_id, originator_version, topic, state) FROM STDIN"
        ).format(table)
        lock_sql = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table)
        seq_sql = sql.SQL("SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)")
        qualified = f'"{where.schema or "public"}"."relay_events"'
        copied = 0
        t0 = time.perf_counter()
        with psycopg.connect(**where.connect_kwargs()) as conn:
            for page in _pages(src, done, batch):
                with conn.transaction():
                    conn.execute(lock_sql)
                    with conn.cursor().copy(copy_sql) as cp:
                        for n in page:
                            cp.write_row((n.id, n.originator_id, n.originator_version, n.topic, n.state))
                    conn.execute(seq_sql, (qualified, page[-1].id))
                copied += len(page)
                rate = copied / max(time.perf_counter() - t0, 1e-9)
                pct = 100.0 * page[-1].id / total_head if total_head else 100.0
                progress(f"copied up to position {page[-1].id} of {total_head} ({pct:.0f}%), "
                         f"{copied} events, {rate:,.0f} events/s")
        progress("checking: folding both logs into the rolling hash")
        h_src, n_src, head_src = _fold(src, chain, batch)
        h_dst, n_dst, head_dst = _fold(dst, chain, batch)
        if (h_src, n_src, head_src) != (h_dst, n_dst, head_dst):
            raise MigrationError(
                f"the copy differs: source {n_src} events to {head_src} hash {h_src.hex()}, "
                f"target {n_dst} events to {head_dst} hash {h_dst.hex()}"
            )
        return {"copied": copied, "total": n_src, "head": head_src, "hash": h_src.hex()}
    finally:
        src.close()
        dst.close()


def _fold(app: RelayApp, chain: Any, batch: int) -> tuple[bytes, int, int]:
    h = chain.GENESIS
    count = head = 0
    for page in _pages(app, 0, batch):
        h, _ = chain.fold(h, page)
        count += len(page)
        head = page[-1].id
    return h, count, head
