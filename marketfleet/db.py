"""Registry database: tortoise configuration, schema migrations, connection lifecycle.

Every domain package's ORM models are one tortoise app ("models") whose migrations live in
`marketfleet/migrations`; `marketfleet db upgrade` (and start-up) applies them, so an upgrade keeps data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.executor import EXECUTOR_CACHE
from tortoise.exceptions import DBConnectionError
from tortoise.migrations.api import migrate

# One tortoise app per domain that stores rows in the registry, each with its own migrations package, so
# domains evolve their tables independently. The fleet app keeps the label "models" (FKs say "models.Device").
APPS: dict[str, tuple[list[str], str]] = {
    "models": (["fleet.models", "broker.models"], "marketfleet.migrations"),
    "accounts": (["accounts.models"], "accounts.migrations"),
    "compliance": (["compliance.models"], "compliance.migrations"),
    "rules": (["rules.models"], "rules.migrations"),
    "firmware": (["firmware.models"], "firmware.migrations"),
    "vision": (["vision.models"], "vision.migrations"),
    "retail": (["retail.models"], "retail.migrations"),
    "upstream": (["upstream.models"], "upstream.migrations"),
}


class DatabaseUnavailable(RuntimeError):
    """The registry database cannot be reached; the message says where and why."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient  # worth retrying (refused while starting), unlike a bad password


def tortoise_config(url: str) -> dict[str, Any]:
    return {
        "connections": {"default": url},
        "apps": {
            label: {"models": modules, "default_connection": "default", "migrations": migrations}
            for label, (modules, migrations) in APPS.items()
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite://") and not url.startswith("sqlite://:memory:"):
        Path(url.removeprefix("sqlite://").split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)


async def upgrade(url: str, progress: Callable[[str, str, str], object] | None = None) -> None:
    """Apply every pending migration."""
    _ensure_sqlite_dir(url)
    with _unavailable_as_error(url):
        await migrate(config=tortoise_config(url), progress=progress)
    await Tortoise.close_connections()


async def connect(url: str, *, attempts: int = 10, delay_s: float = 1.0) -> None:
    """Migrate and open the registry, retrying while the server starts (PostgreSQL after a reboot)."""
    for attempt in range(attempts):
        try:
            await upgrade(url)
            break
        except DatabaseUnavailable as err:
            if not err.transient or attempt + 1 == attempts:
                raise
            await asyncio.sleep(delay_s)
    with _unavailable_as_error(url):
        await Tortoise.init(config=tortoise_config(url))
        if url.startswith("sqlite://"):
            conn = Tortoise.get_connection("default")
            # WAL lets the dashboard read while ingest writes; busy_timeout rides out short write locks.
            await conn.execute_script("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;")


@contextlib.contextmanager
def _unavailable_as_error(url: str) -> Iterator[None]:
    """Turn the drivers' connection failures into one DatabaseUnavailable naming the (redacted) URL."""
    try:
        yield
    except (OSError, ConnectionError) as err:
        raise DatabaseUnavailable(f"registry database {redact(url)} unreachable: {err}", transient=True) from err
    except Exception as err:
        if type(err).__module__.startswith(("asyncpg", "sqlite3")) or isinstance(err, DBConnectionError):
            raise DatabaseUnavailable(f"registry database {redact(url)}: {err}") from err
        raise


async def close() -> None:
    await Tortoise.close_connections()
    # tortoise caches SQL per connection *name*; the next connect may be another dialect (tests run the
    # registry on SQLite and PostgreSQL in one process), so the cache must go with the connection.
    EXECUTOR_CACHE.clear()


def redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{tail}"


# For `marketfleet db makemigrations`: the autodetector compares models with the migration files, so the
# database named here is never touched.
MIGRATION_CONFIG = tortoise_config("sqlite://:memory:")
