"""PostgreSQL: one log shared by several relay processes.

The library's own PostgreSQL module does the storing (table ``relay_events``,
named after the app; ``relay_snapshots`` beside it). Three things are ours:

- ``postgres_env`` turns a DSN into the library's settings. A schema can be
  chosen with the standard ``options=-csearch_path=NAME`` in the DSN; every
  other DSN parameter (``sslmode``, ``application_name``...) reaches libpq.
- ``RelayPostgresFactory`` fails fast. The library retries a failed statement
  ten times, waiting for a pooled connection up to 30 s each time: a write
  during an outage would hang for minutes. A relay should answer 503 within
  seconds and recover by itself, so reads retry briefly, writes never (a
  retried insert after a commit whose answer was lost would decide the
  command twice), and the pool gives up a reconnection chain after a few
  seconds so a fresh attempt follows the outage closely.
- ``LogListener``: one LISTEN connection per process. Every commit on the log
  (by any node) sends a NOTIFY; the listener asks for the log's head and
  hands it to the event loop, where the tail follower fetches what it has not
  applied. That one subscription is fanned out to every SSE subscriber by
  the follower's listeners; nothing polls at a fixed interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from relay.config import Settings
from relay.store import prefixed

log = logging.getLogger(__name__)

EVENTS_TABLE = "relay_events"  # the library names it after the app ("Relay")
CHANNEL = EVENTS_TABLE  # the library NOTIFYs on the table's name, schema or not
POOL_WAIT_SECONDS = 2  # how long a statement waits for a connection before a 503
RECONNECT_GIVE_UP_SECONDS = 5.0
_OWN_KEYS = ("dbname", "host", "port", "user", "password")
_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*([^\s,]+)")



def _read_retry(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Reads are idempotent: retry one that failed on a broken connection, quickly.

    Not when the pool found no connection at all within its wait: PostgreSQL
    is unreachable, and waiting again would only delay the 503. Writes get no
    retry (see the module text).
    """

    @functools.wraps(fn)
    def read(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(3):
            try:
                return fn(*args, **kwargs)
            except (InterfaceError, OperationalError) as e:
                if attempt == 2 or isinstance(e.__cause__, psycopg_pool.PoolTimeout):
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    return read


class DsnTarget:
    """What a DSN names: the library's five settings, a schema, and the rest for libpq."""

    def __init__(self, dsn: str) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as e:
            raise ValueError(f"not a valid PostgreSQL DSN: {e}") from None
        self.dbname = str(params.get("dbname") or getpass.getuser())
        self.host = str(params.get("host") or "")
        self.port = str(params.get("port") or "5432")
        self.user = str(params.get("user") or getpass.getuser())
        self.password = str(params.get("password") or "")
        m = _SEARCH_PATH.search(str(params.get("options") or ""))
        self.schema = m.group(1).strip("\"'") if m else ""
        extras = {k: v for k, v in params.items() if k not in _OWN_KEYS and v is not None}
        extras.setdefault("connect_timeout", "3")
        extras.setdefault("application_name", "relay")
        self.extras: dict[str, Any] = extras

    def connect_kwargs(self) -> dict[str, Any]:
        """Everything psycopg.connect needs, for connections outside the pool."""
        kw: dict[str, Any] = {"dbname": self.dbname, "user": self.user, "port": self.port}
        if self.host:
            kw["host"] = self.host
        if self.password:
            kw["password"] = self.password
        kw.update(self.extras)
        return kw

    @property
    def qualified_table(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema or "public"), sql.Identifier(EVENTS_TABLE))

    def describe(self) -> str:
        """For logs and errors: never the password."""
        where = self.host or "local socket"
        schema = f", schema {self.schema}" if self.schema else ""
        return f"{self.user}@{where}:{self.port}/{self.dbname}{schema}"


def postgres_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing ``env`` for ``--store postgres``."""
    assert settings.postgres_dsn, "checked by Settings"
    t = DsnTarget(settings.postgres_dsn)
    return prefixed(
        {
            "PERSISTENCE_MODULE": f"{__name__}:RelayPostgresFactory",
            "POSTGRES_DBNAME": t.dbname,
            "POSTGRES_HOST": t.host,
            "POSTGRES_PORT": t.port,
            "POSTGRES_USER": t.user,
            "POSTGRES_PASSWORD": t.password,
            "POSTGRES_SCHEMA": t.schema,
            "POSTGRES_CONNECT_TIMEOUT": str(POOL_WAIT_SECONDS),
            "POSTGRES_PRE_PING": "y",
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": "8",
            "POSTGRES_EXTRA_CONNINFO": make_conninfo(**t.extras),
        }
    )


def _ensure_schema(recorder: PostgresAggregateRecorder) -> None:
    schema = recorder.datastore.schema
    if schema == "public":
        return
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


class RelayAggregateRecorder(PostgresAggregateRecorder):
    """Snapshots: the library's recorder with fail-fast retries."""

    insert_events = PostgresAggregateRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    select_events = _read_retry(PostgresAggregateRecorder.select_events.__wrapped__)  # type: ignore[attr-defined]

    def create_table(self) -> None:
        _ensure_schema(self)
        super().create_table()


class RelayApplicationRecorder(PostgresApplicationRecorder):
    """The log: the library's recorder with fail-fast retries, and ``exclusive()``."""

    insert_events = PostgresApplicationRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    select_events = _read_retry(PostgresAggregateRecorder.select_events.__wrapped__)  # type: ignore[attr-defined]
    select_notifications = _read_retry(
        PostgresApplicationRecorder.select_notifications.__wrapped__  # type: ignore[attr-defined]
    )
    max_notification_id = _read_retry(
        PostgresApplicationRecorder.max_notification_id.__wrapped__  # type: ignore[attr-defined]
    )

    def create_table(self) -> None:
        _ensure_schema(self)
        super().create_table()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the log's insert lock across load, decide and save, on this thread.

        The optimistic path decides outside any lock and lets a version clash
        say when another node got there first. On one entity written by two
        busy nodes that can lose again and again; the writer then takes this
        path: in one transaction it takes the same ``EXCLUSIVE`` table lock the
        library's insert takes (readers are not blocked), and every statement
        this thread runs meanwhile (loading the aggregates, saving, snapshots)
        uses that transaction's connection. Nobody can insert between our read
        and our write, so this attempt cannot clash.
        """
        ds = self.datastore
        pin: threading.local = ds._relay_pin  # type: ignore[attr-defined]
        with ds.transaction(commit=True) as curs:
            for statement in self.lock_table_statements:
                curs.execute(statement)
            pin.conn = curs.connection
            try:
                yield
            finally:
                pin.conn = None


class RelayPostgresFactory(PostgresFactory):
    """The library's factory, with our recorders and a pool that recovers promptly."""

    aggregate_recorder_class = RelayAggregateRecorder
    application_recorder_class = RelayApplicationRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        pool = self.datastore.pool
        extra = self.env.get("POSTGRES_EXTRA_CONNINFO") or ""
        if extra:
            assert isinstance(pool.kwargs, dict)
            pool.kwargs.update(conninfo_to_dict(extra))
        # psycopg_pool backs off 1, 2, 4... s for up to 5 minutes: after a long
        # outage its next attempt could be a minute away. Giving a chain up
        # early lets the next request start a fresh, immediate attempt.
        pool.reconnect_timeout = RECONNECT_GIVE_UP_SECONDS
        _pin_connections(self.datastore)


def _pin_connections(ds: Any) -> None:
    """Let ``exclusive()`` route this thread's statements through its locked connection."""
    pin = threading.local()
    pin.conn = None
    pooled = ds.get_connection

    @contextmanager
    def get_connection() -> Iterator[Any]:
        conn = getattr(pin, "conn", None)
        if conn is not None:
            # Errors surface through exclusive()'s own pooled connection,
            # which maps them to the library's exceptions.
            yield conn
            return
        with pooled() as conn:
            yield conn

    ds._relay_pin = pin
    ds.get_connection = get_connection


# -- the subscription ----------------------------------------------------------------


class LogListener:
    """One LISTEN connection per process: each NOTIFY becomes ``on_head(head)`` on the loop.

    The notification carries nothing; the listener reads the log's head (one
    indexed query, notifications arriving meanwhile coalesce) and the loop
    decides whether the follower must fetch. After every (re)connect it
    reports the head too, so whatever was committed while it was not
    listening is caught up.
    """

    def __init__(
        self,
        target: DsnTarget,
        loop: asyncio.AbstractEventLoop,
        on_head: Callable[[int], None],
        idle_timeout: float = 0.5,
    ) -> None:
        self.target = target
        self.loop = loop
        self.on_head = on_head
        self.idle_timeout = idle_timeout
        self.connected = False
        self.last_error: str | None = None
        self.down_since: float | None = None  # time.time() when the connection was lost
        self.notifications = 0
        self.reconnects = 0
        self._stop = threading.Event()
        self._tried = threading.Event()  # the first connection attempt is over, either way
        self._thread = threading.Thread(target=self._run, name="relay-pg-listen", daemon=True)
        self._head_query = sql.SQL("SELECT max(notification_id) AS head FROM {}").format(
            target.qualified_table
        )

    def start(self) -> None:
        self._thread.start()

    def wait_first_attempt(self, timeout: float) -> bool:
        """Block until the first connection attempt is over; True if it is listening."""
        self._tried.wait(timeout)
        return self.connected

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.05
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(autocommit=True, **self.target.connect_kwargs()) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    if not first:
                        self.reconnects += 1
                        log.info("listening on the log again")
                    first = False
                    self.connected = True
                    self.down_since = None
                    self.last_error = None
                    backoff = 0.05
                    self._tried.set()
                    self._report(conn)
                    self._listen(conn)
            except psycopg.Error as e:
                if self._stop.is_set():
                    return
                if self.connected or self.last_error is None:
                    log.warning("lost the LISTEN connection to PostgreSQL: %s", e)
                self.connected = False
                self.last_error = f"{type(e).__name__}: {e}".strip()
                if self.down_since is None:
                    self.down_since = time.time()
                self._tried.set()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
        self.connected = False

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            got = 0
            for _ in conn.notifies(timeout=self.idle_timeout, stop_after=1):
                got += 1
            if got:
                self.notifications += got
                self._report(conn)

    def _report(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(self._head_query).fetchone()
        head = row[0] if row else None
        if head:
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                self.loop.call_soon_threadsafe(self.on_head, int(head))

    def status(self) -> dict[str, Any]:
        """A health check entry: is this node hearing about other nodes' writes?"""
        if self.connected:
            return {
                "name": "subscription",
                "status": "ok",
                "detail": f"listening on {CHANNEL} ({self.notifications} notifications, "
                f"{self.reconnects} reconnects)",
            }
        if self.last_error is None:
            return {"name": "subscription", "status": "warn", "detail": "connecting"}
        since = f" for {time.time() - self.down_since:.0f} s" if self.down_since else ""
        return {
            "name": "subscription",
            "status": "error",
            "detail": f"not listening{since} ({self.last_error or 'connecting'}); retrying",
        }


async def start_listener(service: Any, wait: float = 5.0) -> LogListener:
    """Subscribe ``service`` (a started RelayService) to the log.

    Returns once the subscription listens (or its first attempt failed, or
    ``wait`` passed): a node that answers requests should already hear about
    other nodes' writes. Whatever was committed before it listened is caught
    up by the head it reports on connecting.
    """
    loop = asyncio.get_running_loop()

    def on_head(head: int) -> None:
        tail, writer = service.tail, service.writer
        if tail is None:
            return
        tail.head_seen = max(tail.head_seen, head)
        if head <= tail.rm.position:
            return  # already applied
        if writer is not None and head <= writer.committed_head:
            # Our own commit: its hand-over is queued on this loop and applies
            # it (and fetches, if another node's event came first).
            return
        tail.poke(head)

    listener = LogListener(DsnTarget(service.settings.postgres_dsn), loop, on_head)
    listener.start()
    if not await loop.run_in_executor(None, listener.wait_first_attempt, wait):
        log.warning("not listening on the log yet (%s); retrying in the background", listener.last_error)
    return listener


def probe(dsn: str) -> str | None:
    """None when a connection to ``dsn`` opens; otherwise libpq's reason, with where we tried."""
    target = DsnTarget(dsn)
    try:
        with psycopg.connect(**target.connect_kwargs()):
            return None
    except psycopg.Error as e:
        return f"PostgreSQL at {target.describe()} is unreachable: {str(e).strip()}"
