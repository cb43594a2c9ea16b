"""Upward data flow (issue 11): a supervision platform that is down receives everything, in order, once, when it
returns; records carry its field names and a signature it can check; a record it refuses does not block it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from broker.bus import PresenceChanged
from fleet.envelope import Envelope
from marketfleet import db
from rules.delivery import verify_signature
from tests.factories import ADMIN, serve_api, start_test_platform
from tests.integration.broker.device import TestDevice
from tests.services import find_free_port
from upstream import UpstreamService, UpstreamSettings
from upstream.models import UpstreamRecord
from upstream.service import SIGNATURE_HEADER, TIMESTAMP_HEADER

pytestmark = pytest.mark.timeout(120)
SECRET = "district-shared-secret"
T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class Receiver:
    """A district platform: verifies the signature, records every batch, can refuse records it dislikes."""

    def __init__(self, port: int, refuse_when: str | None = None) -> None:
        self.port, self.refuse_when = port, refuse_when
        self.records: list[dict[str, Any]] = []
        self.bad_signatures = 0
        app = FastAPI()

        @app.post("/feed")
        async def feed(request: Request) -> Response:
            body = await request.body()
            if not verify_signature(SECRET, request.headers[TIMESTAMP_HEADER], body, request.headers[SIGNATURE_HEADER]):
                self.bad_signatures += 1
                return Response(status_code=401)
            batch = json.loads(body)["records"]
            if self.refuse_when and any(self.refuse_when in json.dumps(r) for r in batch):
                return Response("unknown product code", status_code=422)
            self.records.extend(batch)
            return Response(status_code=204)

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="off"))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        task = asyncio.create_task(self.server.serve())
        for _ in range(500):
            if self.server.started:
                break
            await asyncio.sleep(0.02)
        try:
            yield self
        finally:
            self.server.should_exit = True
            await task


def target(port: int, **extra: Any) -> dict[str, Any]:
    return {"name": "futian", "url": f"http://127.0.0.1:{port}/feed", "secret": SECRET, "batch_size": 7,
            "fields": {"transactions": {"total": "amount", "order_no": "ddbh"}}, **extra}


def transaction(n: int, market: str = "SZ-FT-001") -> Envelope:
    return Envelope(device_id="acme-S1", kind="scale", market=market, channel="event", ts=T0 + timedelta(seconds=n),
                    seq=n, payload={"type": "transaction", "order_no": f"O{n:05d}", "total": n + 0.5})


async def wait_for(predicate, within: float = 30.0) -> None:
    for _ in range(int(within / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
async def registry_db(registry_url_factory) -> AsyncIterator[None]:
    await db.connect(registry_url_factory("sqlite"))
    try:
        yield
    finally:
        await db.close()


async def test_a_receiver_that_is_down_gets_everything_in_order_once_it_returns(registry_db) -> None:
    port = find_free_port()
    service = UpstreamService(UpstreamSettings(targets=[target(port)], poll_interval_s=0.1))
    await service.start()
    try:
        for n in range(30):
            service.record(transaction(n))
            if n == 10:  # other classes interleave: status and alerts keep their place in the order
                service.record(PresenceChanged("acme-S1", "SZ-FT-001", False, "will", T0))
                service.record({"event": "alert.opened", "alert": {"id": 1, "market": "SZ-FT-001", "rule_id": "r"}})
        service.record(transaction(99, market=None))  # no market: still reported (the target takes every market)
        await service.flush()
        await wait_for(lambda: _failed_once(service))  # it tried, and the receiver was not there
        assert await UpstreamRecord.filter(delivered_at=None).count() == 33

        async with Receiver(port).running() as receiver:
            await wait_for(lambda: _all_delivered())
        assert receiver.bad_signatures == 0
        ids = [r["id"] for r in receiver.records]
        assert ids == sorted(ids) and len(set(ids)) == 33  # in order, each once
        classes = [r["class"] for r in receiver.records]
        assert classes[11:13] == ["device_status", "alerts"] and classes.count("transactions") == 31
        first = receiver.records[0]["data"]
        assert (first["ddbh"], first["amount"], first["device_id"]) == ("O00000", 0.5, "acme-S1")
        assert "total" not in first and "type" not in first
    finally:
        await service.aclose()


async def _failed_once(service: UpstreamService) -> bool:
    return bool(service.state["futian"]["last_error"])


async def _all_delivered() -> bool:
    return not await UpstreamRecord.filter(delivered_at=None, failed_at=None).exists()


async def test_a_refused_batch_is_kept_with_the_reason_and_does_not_block_the_rest(registry_db) -> None:
    port = find_free_port()
    service = UpstreamService(UpstreamSettings(targets=[target(port, batch_size=1, classes=["transactions"],
                                                               markets=["SZ-FT-001"])], poll_interval_s=0.1))
    async with Receiver(port, refuse_when="O00003").running() as receiver:
        await service.start()
        try:
            for n in range(6):
                service.record(transaction(n))
            service.record(transaction(7, market="BJ-XC-002"))  # another market: not this target's
            service.record(PresenceChanged("acme-S1", "SZ-FT-001", True, "connected", T0))  # class not wanted
            await service.flush()
            await wait_for(lambda: _all_delivered())
        finally:
            await service.aclose()
    assert [r["data"]["ddbh"] for r in receiver.records] == ["O00000", "O00001", "O00002", "O00004", "O00005"]
    refused = await UpstreamRecord.get(failed_at__isnull=False)
    assert refused.body["ddbh"] == "O00003"
    assert "422" in refused.last_error and "unknown product" in refused.last_error
    assert await UpstreamRecord.all().count() == 6


def test_bad_upstream_settings_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match="same name"):
        UpstreamSettings(targets=[target(1, fields={"transactions": {"total": "x", "order_no": "x"}})])
    with pytest.raises(ValueError, match="unique"):
        UpstreamSettings(targets=[target(1), target(2)])
    with pytest.raises(ValueError, match="classes"):
        UpstreamSettings(targets=[target(1, classes=["gossip"])])


async def test_a_scale_sale_over_mqtt_reaches_the_district_and_the_status_api_shows_it(
    tmp_path: Path, registry_url_factory
) -> None:
    port = find_free_port()
    async with Receiver(port).running() as receiver, start_test_platform(
        tmp_path / "var", registry_url_factory("sqlite"), upstream={"targets": [target(port)], "poll_interval_s": 0.1},
    ) as platform, serve_api(platform.app) as api:
        await api.post("/api/v1/admin/markets", json={"code": "SZ-FT-001", "name": "Futian"}, headers=ADMIN)
        key = (await api.post("/api/v1/admin/vendors", json={"code": "acme", "name": "Acme"}, headers=ADMIN)).json()
        rows = (await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key["api_key"]}, json={
            "devices": [{"serial": "S1", "kind": "scale", "market": "SZ-FT-001"}]})).json()["rows"]
        device = TestDevice("127.0.0.1", platform.settings.broker.port, rows[0]["device_id"], rows[0]["secret"],
                            "SZ-FT-001", tmp_path / "outbox.sqlite3")
        runner = asyncio.create_task(device.run())
        try:
            await device.wait_connected()
            device.produce({"type": "transaction", "order_no": "A-1", "time": T0.isoformat(),
                            "market_code": "SZ-FT-001", "stall_no": "A01", "scale_id": rows[0]["device_id"],
                            "product_name": "白菜", "weight_kg": "1.25", "unit_price": "3.20", "total": "4.00"},
                           channel="event")
            await device.wait_outbox_empty()

            async def sale_arrived() -> bool:
                return any(r["class"] == "transactions" for r in receiver.records)

            await wait_for(sale_arrived)
        finally:
            device.stop()
            await runner
        sale = next(r for r in receiver.records if r["class"] == "transactions")["data"]
        assert (sale["ddbh"], sale["amount"], sale["product_name"]) == ("A-1", "4.00", "白菜")
        assert any(r["class"] == "device_status" and r["data"]["online"] for r in receiver.records)
        status = (await api.get("/api/v1/upstream", headers=ADMIN)).json()
        assert status[0]["name"] == "futian" and status[0]["delivered"] >= 2
        missing = await api.post("/api/v1/upstream/nowhere/retry-refused", headers=ADMIN)
        assert missing.status_code == 404
