"""Dry-run over stored telemetry: readings written as the ingest pipeline writes them come back as envelopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleet.kinds import Channel, DeviceKind, validate_payload
from fleet.models import Device, Market, Vendor
from rules.replay import envelopes_from_store
from telemetry import SqliteStore
from tests.integration.rules.conftest import forget_routing_and_state, start_service
from tests.unit.rules.factories import env_reading, locker, transaction

readings_module = pytest.importorskip("broker.readings")
pytestmark = pytest.mark.timeout(60)


async def store_messages(store: SqliteStore, device_id: str, kind: str, channel: str,
                         messages: list[tuple[datetime, dict]], market: str = "DRY") -> None:
    readings = []
    for seq, (ts, payload) in enumerate(messages):
        model = validate_payload(kind, channel, payload)
        readings += readings_module.readings_for(device_id, kind, market, channel, seq, ts, model)
    await store.write(readings)


async def test_stored_readings_come_back_as_the_payloads_that_were_sent(tmp_path: Path):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    async with SqliteStore(tmp_path / "telemetry.sqlite3") as store:
        await store_messages(store, "LK-DRY", "cold_locker", "telemetry",
                             [(start + timedelta(minutes=n), locker({1: 4.0 + n, 2: 5.0}, {2: "open"}))
                              for n in range(3)])
        await store_messages(store, "SC-DRY", "scale", "event", [(start, transaction("leek", 6.5))])
        lockers = [e async for e in envelopes_from_store(store, ["LK-DRY"], DeviceKind.COLD_LOCKER,
                                                         Channel.TELEMETRY, start, start + timedelta(hours=1))]
        sales = [e async for e in envelopes_from_store(store, ["SC-DRY"], DeviceKind.SCALE, Channel.EVENT,
                                                       start, start + timedelta(hours=1))]
    assert [e.payload for e in lockers] == [locker({1: 4.0 + n, 2: 5.0}, {2: "open"}) for n in range(3)]
    assert lockers[0].market == "DRY" and lockers[1].ts == start + timedelta(minutes=1)
    [sale] = sales
    assert (sale.payload["type"], sale.payload["product_name"], sale.payload["unit_price"]) == (
        "transaction", "leek", 6.5)


async def test_the_service_dry_runs_a_rule_over_the_last_week_of_telemetry(platform, tmp_path: Path):
    market = await Market.create(code="DRY", name="Dry-run market")
    vendor = await Vendor.create(code="dry", name="Sensors", api_key_prefix="dryprefix", api_key_hash="-")
    await Device.create(id="dry-ENV1", serial="ENV1", vendor=vendor, kind="env_sensor", market=market)
    now = datetime.now(UTC).replace(microsecond=0)
    async with SqliteStore(tmp_path / "telemetry.sqlite3") as store:
        # Three hot afternoons (40 min above 32 °C each) in the last week.
        messages = []
        for day in (1, 3, 5):
            for minute in range(0, 120, 5):
                value = 33.0 if 40 <= minute < 80 else 24.0
                messages.append((now - timedelta(days=day) + timedelta(minutes=minute), env_reading(value)))
        await store_messages(store, "dry-ENV1", "env_sensor", "telemetry", sorted(messages, key=lambda m: m[0]))
        service = await start_service(tmp_path, telemetry=store)
        try:
            rule = {"id": "dry-hot", "name": "Hot", "scope": {"kind": "env_sensor", "markets": ["DRY"]},
                    "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 32},
                    "for": "15m"}
            result = await service.dry_run(rule, days=7)
        finally:
            await service.aclose()
            await forget_routing_and_state()
    assert (result.envelopes, result.fired, result.resolved) == (72, 3, 3)
    assert result.by_device == {"dry-ENV1": 3}
