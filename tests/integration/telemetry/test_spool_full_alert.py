"""Disk full on the telemetry spool (issue 11, crash safety): back-pressure, an alert, no corruption.

The real platform with a real InfluxDB that is stopped mid-stream, a spool limited to 64 KiB, and a device that
sends through the real HTTP ingest path until the spool refuses. Managers hear of it (the alerts API and the live
stream, also through a market-scoped manager's recipient view); what was spooled decodes intact; once InfluxDB is
back the spool drains, both alerts resolve themselves, and every reading the device had acknowledged is in
InfluxDB exactly once.

Its own module: it starts a platform of its own (the registry is process-wide). It stops the session's shared
`influx_server` and restarts it in a `finally`, like tests/integration/telemetry/test_influx_spool.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from telemetry.spool import decode_records
from tests.factories import (
    ADMIN,
    create_vendor,
    ensure_market,
    eventually,
    sent_readings,
    serve_api,
    start_test_platform,
)
from tests.services import InfluxServer

pytestmark = [pytest.mark.influx, pytest.mark.timeout(300)]

T = TypeVar("T")
MARKET = "SPOOL1"
MEASUREMENT = "env_sensor.telemetry"
SPOOL_LIMIT = 64 * 1024
PER_UPLINK = 40  # messages per HTTP uplink (~6 KiB of line protocol): about ten fill the spool
FULL, FILLING = "telemetry-spool-full", "telemetry-spool-filling"



async def register_sensor(api: httpx.AsyncClient) -> tuple[str, str]:
    await ensure_market(api, MARKET, "Spool market")
    key = await create_vendor(api, "spoolv")
    response = await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key},
                              json={"devices": [{"serial": "SP1", "kind": "env_sensor", "market": MARKET}]})
    assert response.status_code == 200, response.text
    [row] = response.json()["rows"]
    return row["device_id"], row["secret"]


async def collect(api: httpx.AsyncClient, params: dict[str, Any], into: list[dict[str, Any]],
                  ready: asyncio.Event) -> None:
    """Read the alert stream (SSE) as a dashboard does, appending every message."""
    async with api.stream("GET", "/api/v1/alerts/stream", params=params, headers=ADMIN) as response:
        assert response.status_code == 200
        event = ""
        async for line in response.aiter_lines():
            if line == ": connected":
                ready.set()
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.append({"event": event, **json.loads(line.removeprefix("data: "))})


def seen(messages: list[dict[str, Any]], event: str, rule_id: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["event"] == event and m["alert"]["rule_id"] == rule_id]


async def alerts(api: httpx.AsyncClient, rule_id: str, status: str | None = None) -> list[dict[str, Any]]:
    params = {"rule_id": rule_id} | ({"status": status} if status else {})
    response = await api.get("/api/v1/alerts", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return list(response.json())


@pytest.fixture
def database(influx_server: InfluxServer) -> AsyncIterator[str]:
    name = f"spoolalert_{uuid.uuid4().hex[:10]}"
    yield name  # type: ignore[misc]
    if not influx_server.running:
        influx_server.start()
    influx_server.query(f'DROP DATABASE "{name}"')


async def test_a_full_spool_back_pressures_alerts_managers_and_loses_nothing(
    influx_server: InfluxServer, database: str, tmp_path: Path
) -> None:
    telemetry = {"backend": "influxdb", "url": influx_server.url, "database": database,
                 "spool_max_bytes": SPOOL_LIMIT}
    rules = {"spool_check_s": 0.2, "alert_flush_s": 0.05, "scheduler": False}
    registry = f"sqlite://{tmp_path / 'registry.sqlite3'}"
    async with start_test_platform(tmp_path, registry, telemetry=telemetry, rules=rules) as platform, \
            serve_api(platform.app) as api:  # fmt: skip
        device_id, secret = await register_sensor(api)
        device = {"Authorization": f"Bearer {device_id}:{secret}"}
        # A manager of this market only: a platform alert has no market, yet concerns theirs too.
        manager = await api.post("/api/v1/recipients", headers=ADMIN, json={
            "name": "Market manager", "role": "manager", "markets": [MARKET],
            "channels": [{"type": "sse"}]})
        assert manager.status_code == 201, manager.text

        start = datetime.now(UTC) - timedelta(hours=2)
        seq = 0
        accepted: set[int] = set()

        async def send() -> int:
            """One uplink of PER_UPLINK readings; returns the HTTP status, remembers what was acknowledged."""
            nonlocal seq
            messages = []
            for _ in range(PER_UPLINK):
                messages.append({"seq": seq, "ts": (start + timedelta(seconds=seq)).isoformat(),
                                 "payload": {"temperature_c": 20 + seq % 10, "humidity_pct": 50.0}})
                seq += 1
            response = await api.post(f"/api/v1/ingest/{device_id}/telemetry", json=messages, headers=device)
            assert response.status_code in (200, 503), response.text
            accepted.update(response.json()["seqs"])
            return response.status_code

        assert await send() == 200  # InfluxDB up: written directly

        everything: list[dict[str, Any]] = []
        as_manager: list[dict[str, Any]] = []
        ready = [asyncio.Event(), asyncio.Event()]
        readers = [asyncio.create_task(collect(api, {}, everything, ready[0])),
                   asyncio.create_task(collect(api, {"recipient": manager.json()["id"]}, as_manager, ready[1]))]
        try:
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 20)
            await asyncio.to_thread(influx_server.stop)
            try:
                # Until the spool refuses: the device is told to retry (503), nothing of that uplink is stored.
                statuses = [await send() for _ in range(3)]
                while statuses[-1] == 200:
                    assert len(statuses) < 40, "the 64 KiB spool never filled"
                    statuses.append(await send())
                assert statuses[-1] == 503
                before_refused = len(accepted)

                full = await eventually(lambda: alerts(api, FULL, "active"), what="spool-full alert")
                filling = await eventually(lambda: alerts(api, FILLING, "active"), what="spool-filling alert")
                assert full[0]["severity"] == "critical" and full[0]["category"] == "platform"
                assert full[0]["market"] is None and "full" in full[0]["message"]
                assert filling[0]["severity"] == "warning"

                # Still full: another refused uplink opens no second alert.
                assert await send() == 503
                assert len(accepted) == before_refused
                metrics = (await api.get("/api/v1/broker/metrics", headers=ADMIN)).json()["telemetry_spool"]
                assert metrics["refused"] >= 2 and metrics["refusing"] is True
                assert metrics["max_bytes"] == SPOOL_LIMIT and metrics["fill_percent"] >= 90
                await asyncio.sleep(1.0)  # several spool checks
                assert len(await alerts(api, FULL)) == 1 and len(await alerts(api, FILLING)) == 1

                # Live: the stream carried each opening once, and the manager's view carries them too.
                await eventually(lambda: _true(seen(everything, "alert.opened", FULL)), what="stream: full opened")
                await eventually(lambda: _true(seen(as_manager, "alert.opened", FULL)), what="manager: full opened")
                assert len(seen(everything, "alert.opened", FULL)) == 1
                assert len(seen(everything, "alert.opened", FILLING)) == 1

                # Nothing spooled is corrupt: every segment decodes whole, and holds the outage's readings.
                spool_dir = tmp_path / "telemetry-spool" / database
                lines = 0
                for segment in sorted(spool_dir.glob("*.seg")):
                    decoded = decode_records(segment.read_bytes())
                    assert decoded.corrupt == 0 and not decoded.torn, segment
                    lines += sum(len(p.decode().splitlines()) for p in decoded.records)
                assert lines == len(accepted) - PER_UPLINK == metrics["batches"] * PER_UPLINK
            finally:
                await asyncio.to_thread(influx_server.start)

            # InfluxDB is back: the spool drains and both alerts resolve themselves.
            store: Any = platform.store
            await eventually(lambda: _true(store.spool_status().bytes == 0), what="spool drained")
            for rule_id in (FULL, FILLING):
                resolved = await eventually(lambda r=rule_id: alerts(api, r, "resolved"), what=f"{rule_id} resolved")
                assert resolved[0]["resolution"] == "auto" and resolved[0]["resolved_by"] == "rules-engine"
            await eventually(lambda: _true(seen(everything, "alert.resolved", FULL)), what="stream: full resolved")
            await eventually(lambda: _true(seen(as_manager, "alert.resolved", FULL)), what="manager: resolved")
            metrics = (await api.get("/api/v1/broker/metrics", headers=ADMIN)).json()["telemetry_spool"]
            assert metrics["refusing"] is False and metrics["spooling"] is False

            # Writes go straight to InfluxDB again.
            assert await send() == 200
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

        # Every acknowledged reading is in InfluxDB, exactly once; no refused one is.
        answer = influx_server.query(
            f'SELECT "seq" FROM "marketfleet"."{MEASUREMENT}" WHERE "device_id" = \'{device_id}\'', database)
        [series] = answer["results"][0]["series"]
        stored = [int(row[1]) for row in series["values"]]
        assert len(stored) == len(set(stored)) and set(stored) == accepted
        assert await sent_readings(store, device_id) == len(accepted)


async def _true(value: object) -> object:
    return value
