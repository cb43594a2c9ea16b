"""Every kind's simulator against a platform whose telemetry store is the real InfluxDB: what the devices had
acknowledged is queryable there (issue 4: "queryable from SQLite and from InfluxDB").

Its own module: it starts a platform of its own (the registry is process-wide)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from fleet.kinds import DeviceKind
from simulators import Endpoints, MarketSimulation, register_market_devices
from tests.factories import serve_api, start_test_platform
from tests.services import InfluxServer

pytestmark = pytest.mark.timeout(240)
TOKEN = "test-admin-token"


async def test_every_kind_stores_its_readings_in_influxdb(influx_server: InfluxServer, tmp_path: Path) -> None:
    telemetry = {"backend": "influxdb", "url": influx_server.url, "database": f"sim_{uuid.uuid4().hex[:10]}"}
    registry = f"sqlite://{tmp_path / 'registry.sqlite3'}"
    async with start_test_platform(tmp_path, registry, telemetry=telemetry) as platform, \
            serve_api(platform.app) as api:  # fmt: skip
        creds = await register_market_devices(str(api.base_url), TOKEN, {k.value: 1 for k in DeviceKind},
                                              market="SZ-INF-001")  # fmt: skip
        sim = MarketSimulation(
            creds, Endpoints(mqtt_port=platform.settings.broker.port, coap_port=platform.services["coap"].port,
                             api_url=str(api.base_url).rstrip("/")),
            speed=200.0, console=Console(quiet=True), outbox_path=tmp_path / "outbox.sqlite3", ack_timeout_s=5.0,
        )  # fmt: skip
        await sim.start()
        try:
            async with asyncio.timeout(90):
                while not all(d.stats.acked >= 3 for d in sim.devices):  # noqa: ASYNC110 - simulator counters
                    await asyncio.sleep(0.1)
        finally:
            await sim.stop(drain_s=10)
            sim.close()
        assert platform.store is not None and type(platform.store).__name__.lower().startswith("influx")
        for device in sim.devices:
            assert device.stats.rejected == 0, (device.kind, list(device.rejections))
            assert await platform.store.count(device.device_id) >= 3, device
