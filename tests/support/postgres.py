"""Fresh PostgreSQL schemas for tests, so runs on one shared server never collide.

Tests take the server from ``RELAY_TEST_POSTGRES_DSN`` (CI sets it) and skip
with a reason when it is unset. Each relay log gets its own schema
(``relay_test_<random>``), chosen through the DSN's standard
``options=-csearch_path=...``, which is how ``relay serve`` is told a schema
in production too. A schema is cheaper than a database (milliseconds rather
than half a second), and the whole HTTP suite can run on PostgreSQL.

``RELAY_TEST_STORE=postgres`` makes every ``RelayProcess`` that is not told
otherwise run on PostgreSQL: one schema per data folder, so a test that
restarts a relay on the same folder finds the same log again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import threading
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

DSN_ENV = "RELAY_TEST_POSTGRES_DSN"
STORE_ENV = "RELAY_TEST_STORE"

_lock = threading.Lock()
_by_data_dir: dict[str, str] = {}  # data folder -> schema
_created: list[str] = []


def base_dsn() -> str | None:
    return os.environ.get(DSN_ENV) or None


def require_dsn() -> str:
    """The test server's DSN, or skip the calling test with the reason."""
    dsn = base_dsn()
    if not dsn:
        pytest.skip(f"{DSN_ENV} is not set: no PostgreSQL to test against")
    return dsn


def store_under_test() -> str:
    """``sqlite`` unless ``RELAY_TEST_STORE`` asks for ``postgres``."""
    return os.environ.get(STORE_ENV, "sqlite") or "sqlite"


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` narrowed to ``schema`` (URL or key=value form)."""
    if "://" in dsn:
        sep = "&" if "?" in dsn else "?"
        return f"{dsn}{sep}options={quote('-csearch_path=' + schema)}"
    return f"{dsn} options='-csearch_path={schema}'"


def new_schema(dsn: str | None = None) -> tuple[str, str]:
    """Create an empty schema; returns (schema, DSN narrowed to it). Dropped at exit."""
    base = dsn or require_dsn()
    schema = "relay_test_" + secrets.token_hex(6)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with _lock:
        _created.append(schema)
    return schema, with_schema(base, schema)


def drop_schema(schema: str, dsn: str | None = None) -> None:
    base = dsn or base_dsn()
    if not base:
        return
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    with _lock:
        if schema in _created:
            _created.remove(schema)


def dsn_for_data_dir(data_dir: Path) -> str:
    """The log of the relay on ``data_dir``: the same schema each time it is asked."""
    base = require_dsn()
    key = str(Path(data_dir).resolve())
    with _lock:
        schema = _by_data_dir.get(key)
    if schema is None:
        schema, _ = new_schema(base)
        with _lock:
            _by_data_dir[key] = schema
    return with_schema(base, schema)


@atexit.register
def _drop_all() -> None:
    for schema in list(_created):
        with contextlib.suppress(psycopg.Error):  # a leftover schema is harmless: unique name
            drop_schema(schema)
