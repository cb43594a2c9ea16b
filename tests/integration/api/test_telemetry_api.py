"""Telemetry queries over the API: raw readings of a device channel and per-minute aggregates, scoped like the
fleet; bad windows are a 422 naming the parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from telemetry import Reading
from tests.factories import ADMIN, create_vendor, ensure_market

T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)


async def test_readings_and_aggregates_of_a_device(api: httpx.AsyncClient, platform) -> None:
    await ensure_market(api, "T-MKT")
    key = await create_vendor(api, "telco")
    rows = (await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={
        "devices": [{"serial": "T1", "kind": "env_sensor", "market": "T-MKT"}]})).json()["rows"]
    device_id = rows[0]["device_id"]
    await platform.store.write([
        Reading(device_id, "env_sensor.telemetry", T0 + timedelta(seconds=20 * n), {"temperature_c": float(n)}, seq=n)
        for n in range(6)])  # minute 0: 0, 1, 2 — minute 1: 3, 4, 5

    raw = await api.get(f"/api/v1/admin/devices/{device_id}/telemetry", headers=ADMIN,
                        params={"start": T0.isoformat(), "limit": 4})
    assert raw.status_code == 200, raw.text
    assert [r["seq"] for r in raw.json()["readings"]] == [0, 1, 2, 3]

    series = await api.get(f"/api/v1/admin/devices/{device_id}/telemetry/temperature_c", headers=ADMIN,
                           params={"start": T0.isoformat(), "every": "1m"})
    buckets = series.json()["buckets"]
    assert [(b["mean"], b["min"], b["max"], b["count"]) for b in buckets] == [(1.0, 0.0, 2.0, 3), (4.0, 3.0, 5.0, 3)]

    naive = await api.get(f"/api/v1/admin/devices/{device_id}/telemetry", headers=ADMIN,
                          params={"start": "2026-11-23T08:00:00"})
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]
    backwards = await api.get(f"/api/v1/admin/devices/{device_id}/telemetry", headers=ADMIN,
                              params={"start": T0.isoformat(), "end": (T0 - timedelta(hours=1)).isoformat()})
    assert backwards.status_code == 422 and "before end" in backwards.json()["detail"]
    missing = await api.get("/api/v1/admin/devices/telco-NOPE/telemetry", headers=ADMIN)
    assert missing.status_code == 404
