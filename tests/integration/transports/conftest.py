"""A real ingest stack for the transport tests: registry database, registry, devices, telemetry store, pipeline."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.directory import DeviceDirectory
from broker.ingest import IngestPipeline
from fleet.registry import Registry
from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
from marketfleet import db
from telemetry import TelemetryStore, open_store

DEVICES = {
    "bs": ("esl_base_station", 4),
    "sc": ("scale", 3),
    "fd": ("food_detector", 3),
    "env": ("env_sensor", 2),
}


@dataclass
class Stack:
    registry: Registry
    directory: DeviceDirectory
    store: TelemetryStore
    pipeline: IngestPipeline
    data_dir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)  # prefix -> device ids


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    data_dir = tmp_path_factory.mktemp("transports")
    await db.connect(f"sqlite://{data_dir / 'registry.sqlite3'}")
    registry = Registry(master_key=b"transport-tests-master-key-0123456789")
    directory = DeviceDirectory(ttl_s=300)
    registry.listeners.append(directory)
    vendor, _key = await registry.create_vendor(VendorCreate(code="acme", name="Acme"))
    await registry.create_market(MarketCreate(code="m1", name="Market one"))
    rows = [
        DeviceCreate(serial=f"{prefix.upper()}{n:03d}", kind=kind, market="m1")
        for prefix, (kind, count) in DEVICES.items()
        for n in range(count)
    ]
    result = await registry.register_devices(vendor, rows)
    assert result.created == len(rows), result
    store = open_store("sqlite", path=data_dir / "telemetry.sqlite3")
    await store.start()
    pipeline = IngestPipeline(store, directory, cursor_flush_s=0.2)
    await pipeline.start()
    stack = Stack(registry, directory, store, pipeline, data_dir)
    for row in result.rows:
        assert row.device_id and row.secret
        stack.secrets[row.device_id] = row.secret
    for prefix in DEVICES:
        stack.ids[prefix] = sorted(d for d in stack.secrets if d.startswith(f"acme-{prefix.upper()}"))
    try:
        yield stack
    finally:
        await pipeline.aclose()
        await store.aclose()
        await db.close()
