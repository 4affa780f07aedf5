"""Persistence wiring: the library's ``env`` for the configured store."""

from __future__ import annotations

from pathlib import Path

from relay.config import Settings

SQLITE_FILE = "relay.sqlite"


def store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing ``env`` for the store named in ``settings``.

    SQLite runs in WAL mode (the library sets it) with SQLite's default
    ``synchronous=FULL``: a commit is on disk before we answer.
    """
    if settings.store == "postgres":
        from relay.store.postgres import postgres_env

        return postgres_env(settings)
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
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
