"""Shared pytest fixtures.

Service fixtures are session-scoped and lazy: a server starts only when the
first test asks for it and lives until the session ends (see tests/services.py).
Under CI (``CI=true``) a missing service binary fails the test instead of
skipping it, so a broken install can never pass as "all green".
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `python -m pytest` puts the repo root on sys.path, a bare `pytest` does not.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.services import InfluxServer, MosquittoServer, PostgresServer, Service  # noqa: E402

_SERVICE_MARKERS = {"postgres_server": "postgres", "influx_server": "influx", "mosquitto_server": "mosquitto"}


def pytest_configure(config: pytest.Config) -> None:
    # pytest-asyncio >= 1.4 deprecates overriding event_loop_policy in favour of the
    # loop-factory hook, but that hook re-creates the session loop (and tears down
    # session async fixtures) whenever sync and async tests interleave. Keep the fixture.
    config.addinivalue_line(
        "filterwarnings", 'ignore:Overriding the "event_loop_policy" fixture is deprecated'
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag tests by the services they use, so `-m "not postgres"` works."""
    for item in items:
        for fixture, marker in _SERVICE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """One default-policy event loop for the whole session (matches the ini loop scopes)."""
    return asyncio.DefaultEventLoopPolicy()


def require_service(service: type[Service]) -> None:
    """Fail (CI=true) or skip (locally) when a service's binaries are not installed."""
    missing = service.missing_binaries()
    if not missing:
        return
    message = (
        f"{service.name} not installed (missing: {', '.join(missing)}); run scripts/install-services.sh "
        f"or apt-get install {service.debian_packages}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)  # only outside CI (see above)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Private PostgreSQL: `.dsn`, `.create_database(name) -> dsn`, `.stop()/.start()/.kill()`."""
    require_service(PostgresServer)
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    """Private InfluxDB 1.x: `.url`, `.query(q, db)`, `.stop()/.start()` on the same port."""
    require_service(InfluxServer)
    with InfluxServer() as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto_server() -> Iterator[MosquittoServer]:
    """Private Mosquitto with dynsec: `.host/.port/.admin_username/.admin_password/.dynsec()`."""
    require_service(MosquittoServer)
    with MosquittoServer(dynsec=True) as server:
        yield server


# ---------------------------------------------------------------- the platform under test

_db_counter = iter(range(1_000_000))


@pytest.fixture(scope="session")
def registry_url_factory(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """`make(backend) -> url` of a fresh, empty registry database on SQLite or the private PostgreSQL."""

    def make(backend: str) -> str:
        n = next(_db_counter)
        if backend == "sqlite":
            return f"sqlite://{tmp_path_factory.mktemp('registry') / 'registry.sqlite3'}"
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database(f"mf_test_{os.getpid()}_{n}")

    return make


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registry_backend(request: pytest.FixtureRequest) -> str:
    """Registry contract tests run once per backend."""
    return str(request.param)


@pytest.fixture(scope="module")
async def platform(registry_backend: str, registry_url_factory, tmp_path_factory: pytest.TempPathFactory):
    """A started platform (registry + API app) on a fresh database of the module's backend."""
    from tests.factories import start_test_platform

    url = registry_url_factory(registry_backend)
    async with start_test_platform(tmp_path_factory.mktemp("data"), url) as started:
        yield started


@pytest.fixture(scope="module")
async def api(platform):
    """The platform's HTTP API served by uvicorn on a free loopback port; yields an httpx client."""
    from tests.factories import serve_api

    async with serve_api(platform.app) as client:
        yield client
