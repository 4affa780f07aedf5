"""Persistence wiring: the library's ``env`` for the configured store."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from relay.config import Settings

SQLITE_FILE = "relay.sqlite"
POSTGRES_EXTRA = (
    "PostgreSQL support is not installed: install relay's postgres extra "
    "(pip install 'relay[postgres]', or pip install -e '.[postgres]' in a checkout)"
)
POSTGRES_MODULES = ("psycopg", "psycopg_pool")


class PostgresDriverMissingError(Exception):
    """Raised when ``--store postgres`` or ``relay migrate`` is asked for without psycopg;
    the message names the extra to install."""

    def __init__(self, cause: BaseException | None = None) -> None:
        detail = f" ({cause})" if cause is not None else ""
        super().__init__(POSTGRES_EXTRA + detail)


def require_postgres_driver() -> None:
    """Import the PostgreSQL driver now, so that its absence is one clear sentence at
    start-up rather than a traceback from deep inside the store."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as e:  # not installed, or installed without a usable libpq
        raise PostgresDriverMissingError(e) from e

log = logging.getLogger(__name__)


def private_folder(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by this user only: the log holds every
    label, prompt and message. An existing folder open to others is left as the operator
    made it, with a warning naming the fix."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is masked by the umask; this one is not
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "the data folder %s is open to other users (mode %o); run: chmod -R go-rwx %s",
            path, mode, path,
        )
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 when it is missing, so that what opens it next
    (SQLite, which gives its -wal and -shm files the database's mode) keeps it private."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing ``env`` for the store named in ``settings``.

    SQLite runs in WAL mode (the library sets it) with SQLite's default
    ``synchronous=FULL``: a commit is on disk before we answer.
    """
    if settings.store == "postgres":
        require_postgres_driver()
        from relay.store.postgres import postgres_env

        return postgres_env(settings)
    data = private_folder(Path(settings.data_dir))
    private_file(data / SQLITE_FILE)
    return prefixed(
        {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(data / SQLITE_FILE),
            "SQLITE_LOCK_TIMEOUT": "5",
        }
    )


def prefixed(env: dict[str, str]) -> dict[str, str]:
    """Keys with the app's prefix, so a stray ``RELAY_SQLITE_DBNAME`` in the
    process environment cannot win over what the settings say."""
    return {f"RELAY_{k}": v for k, v in env.items()}
