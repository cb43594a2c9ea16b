"""Fixtures for the broker tests: a fresh SQLite registry per module, registered devices, a telemetry store."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from broker.service import BrokerParams, BrokerService, setup
from fleet.registry import Registry
from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
from marketfleet import db
from telemetry import SqliteStore, open_store
from tests.services import MosquittoServer

MASTER_KEY = b"broker-tests-master-key-0123456789abcdef"
_serials = itertools.count()


@pytest.fixture(scope="module")
async def registry(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Registry]:
    """A migrated SQLite registry of its own for the module, with market M1 and vendor `acme`."""
    path = tmp_path_factory.mktemp("registry") / "r.sqlite3"
    await db.connect(f"sqlite://{path}")
    reg = Registry(master_key=MASTER_KEY)
    await reg.create_market(MarketCreate(code="M1", name="Test market"))
    await reg.create_vendor(VendorCreate(code="acme", name="Acme"))
    try:
        yield reg
    finally:
        await db.close()


async def register(
    registry: Registry, count: int, kind: str = "env_sensor", market: str | None = "M1", keepalive_s: int = 60
) -> dict[str, str]:
    """Register `count` new devices; returns {device_id: secret}."""
    from fleet.models import Vendor

    vendor = await Vendor.get(code="acme")
    rows = [
        DeviceCreate(serial=f"S{next(_serials):06d}", kind=kind, market=market, keepalive_s=keepalive_s)  # type: ignore[arg-type]
        for _ in range(count)
    ]
    result = await registry.register_devices(vendor, rows)
    return {row.device_id: row.secret for row in result.rows if row.device_id and row.secret}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_store("sqlite", path=tmp_path / "telemetry.sqlite3", retention_interval=None) as s:
        yield s  # type: ignore[misc]


def env_payload(i: int = 0) -> dict[str, float]:
    return {"temperature_c": 4.0 + (i % 10) / 10, "humidity_pct": 80.0}


def external_params(server: MosquittoServer, account: str, **extra: Any) -> BrokerParams:
    """External mode against the test Mosquitto; `account` names the platform's own broker login."""
    fields: dict[str, Any] = {"workers": 2, **extra}
    return BrokerParams(mode="external", host=server.host, port=server.port, username=f"mf-platform-{account}",
                        password=f"platform-{account}-secret", admin_username=server.admin_username,
                        admin_password=server.admin_password, **fields)


@contextlib.asynccontextmanager
async def running(params: BrokerParams, registry: Registry, store: SqliteStore) -> AsyncIterator[BrokerService]:
    svc = setup(params, registry, store)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()
