"""Small factories for real objects the tests need: a running platform, an HTTP server, vendors, devices."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from marketfleet.platform import Platform, running_platform
from marketfleet.settings import load_settings
from tests.services import find_free_port


@contextlib.asynccontextmanager
async def start_test_platform(data_dir: Path, registry_url: str, **overrides: Any) -> AsyncIterator[Platform]:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "registry": {"url": registry_url},
        "api": {"admin_token": "test-admin-token"},
        "broker": {"port": find_free_port()},
        "coap": {"port": find_free_port()},
    }
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    settings = load_settings(None, **values)
    async with running_platform(settings) as platform:
        yield platform


@contextlib.asynccontextmanager
async def serve_api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


ADMIN = {"Authorization": "Bearer test-admin-token"}


async def create_vendor(api: httpx.AsyncClient, code: str, name: str | None = None) -> str:
    """Create a vendor through the admin API and return its API key."""
    response = await api.post("/api/v1/admin/vendors", json={"code": code, "name": name or code}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(response.json()["api_key"])


async def ensure_market(api: httpx.AsyncClient, code: str, name: str = "Test market") -> None:
    response = await api.post("/api/v1/admin/markets", json={"code": code, "name": name}, headers=ADMIN)
    assert response.status_code in (201, 409), response.text


def device_rows(count: int, kind: str = "env_sensor", prefix: str = "SN", **extra: Any) -> list[dict[str, Any]]:
    return [{"serial": f"{prefix}{n:06d}", "kind": kind, **extra} for n in range(count)]


async def sent_readings(store: Any, device_id: str) -> int:
    """Readings that came from the device itself: the store also holds the platform's record of its presence
    changes (measurement `presence`, broker/presence_log.py), which no device sent."""
    from broker.presence_log import MEASUREMENT

    return await store.count(device_id) - await store.count(device_id, MEASUREMENT)


async def wait_serving(url: str, proc: subprocess.Popen[bytes], log: Callable[[], str], within_s: float = 120) -> None:
    """Poll `url` until it answers 2xx; fail with the process's log if it exits first or `within_s` runs out."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url, timeout=2)).is_success:
                    return
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log()
            assert time.monotonic() < deadline, f"{url} did not answer within {within_s:.0f} s\n{log()}"
            await asyncio.sleep(0.3)


STORE_BACKENDS = ["sqlite", pytest.param("influxdb", marks=pytest.mark.influx)]


@contextlib.asynccontextmanager
async def telemetry_store(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> AsyncIterator[Any]:
    """The store `request.param` names (see STORE_BACKENDS): SQLite in `tmp_path`, or a fresh InfluxDB database
    on the test server, dropped afterwards."""
    from telemetry import InfluxStore, SqliteStore

    if request.param == "sqlite":
        async with SqliteStore(tmp_path / "telemetry.db", retention_interval=None) as store:
            yield store
        return
    server = request.getfixturevalue("influx_server")
    database = f"{prefix}_{uuid.uuid4().hex[:12]}"
    async with InfluxStore(server.url, database, spool_dir=None) as store:
        yield store
    server.query(f'DROP DATABASE "{database}"')


async def eventually(check: Callable[[], Any], within: float = 60.0, what: str = "", interval: float = 0.05) -> Any:
    """Poll `check` (plain or async) until it returns something truthy and return that; fail after `within`
    seconds with the last value. A bound on waiting, never a timing assertion: the machine may be busy."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):  # a coroutine, or e.g. a tortoise QuerySet
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {within}s (last: {result!r})")
        await asyncio.sleep(interval)
