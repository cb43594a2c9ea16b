"""Shelf labels through the running platform with two base stations (CoAP, as their kind's transport, when the
platform runs CoAP; MQTT otherwise): a label that moves to the other station gets the next update through it,
reports its battery and signal, binds itself by scanning, and a timed promotion downloaded ahead switches on the
label's own clock while the label hears nothing (issue 8 must-show over the real protocols)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from retail.esl_codec import LabelScreen, frame_info
from tests.factories import ADMIN, create_vendor, ensure_market
from tests.integration.retail.test_platform import MARKET, CoapBaseStation, Device, _price, _product, eventually

STATIONS = ("rtr-BS1", "rtr-BS2")


@dataclass
class Aisle:
    """One label between two base stations: `reach` is the station whose radio reaches it (None: out of range)."""

    screen: LabelScreen
    label: Device
    stations: dict[str, Any]
    reach: str | None = "rtr-BS1"
    relayed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (station, label command) heard


@pytest.fixture(scope="module")
async def aisle(api: httpx.AsyncClient, platform) -> AsyncIterator[Aisle]:
    await ensure_market(api, MARKET)
    assert (await api.post(f"/api/v1/admin/markets/{MARKET}/stalls", json={"number": "A01", "holder_name": "王记"},
                           headers=ADMIN)).status_code in (201, 409)
    key = await create_vendor(api, "rtr")
    rows = [{"serial": "BS1", "kind": "esl_base_station", "market": MARKET},
            {"serial": "BS2", "kind": "esl_base_station", "market": MARKET},
            {"serial": "EL1", "kind": "esl", "market": MARKET, "stall": "A01"}]
    created = (await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers={"X-API-Key": key})).json()
    secrets = {row["device_id"]: row["secret"] for row in created["rows"]}
    port = platform.settings.broker.port
    coap = platform.services.get("coap")
    async with contextlib.AsyncExitStack() as stack:
        label = await stack.enter_async_context(Device("127.0.0.1", port, "rtr-EL1", secrets["rtr-EL1"]).connected())
        stations: dict[str, Any] = {}
        for station_id in STATIONS:
            mqtt = Device("127.0.0.1", port, station_id, secrets[station_id])
            await stack.enter_async_context(mqtt.connected())
            stations[station_id] = mqtt
            if coap is not None:  # commands come over CoAP, events still go up by MQTT
                station = CoapBaseStation(coap.port, station_id, secrets[station_id])
                station.publish = mqtt.publish  # type: ignore[attr-defined]
                stations[station_id] = await stack.enter_async_context(station.observing())
        here = Aisle(LabelScreen(296, 128, "bwr"), label, stations)

        def radio(station_id: str):
            async def relay(command: dict[str, Any]) -> None:
                if command.get("command") != "relay" or command["label_id"] != "rtr-EL1":
                    return
                if here.reach != station_id:
                    return  # on the air, but the label is not in this station's range
                here.relayed.append((station_id, command["payload"]))
                for event in here.screen.apply(command["payload"], datetime.now(UTC)):
                    await label.publish("event", event)
            return relay

        for station_id, station in stations.items():
            station.on_command = radio(station_id)
        await stations["rtr-BS1"].publish("event", {"type": "label_joined", "label_id": "rtr-EL1", "rssi_dbm": -55})
        yield here


async def _label_row(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/api/v1/retail/labels/rtr-EL1", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_scan_on_the_label_binds_it_and_it_shows_the_product(api: httpx.AsyncClient, aisle: Aisle) -> None:
    product = await _product(api, "6001", "3.30")
    await aisle.label.publish("event", {"type": "scanned", "product_code": "6001"})
    await eventually(lambda: _price(aisle.screen) == Decimal("3.30"))
    row = await _label_row(api)
    assert (row["product_id"], row["bound_by"]) == (product["id"], "scan:rtr-EL1")


async def test_a_label_that_moved_station_gets_the_next_update_through_the_new_one(
    api: httpx.AsyncClient, aisle: Aisle
) -> None:
    product = await _product(api, "6002", "6.80")
    await api.put("/api/v1/retail/labels/rtr-EL1/binding", json={"product_id": product["id"]}, headers=ADMIN)
    await eventually(lambda: _price(aisle.screen) == Decimal("6.80"))
    assert aisle.relayed[-1][0] == "rtr-BS1"

    aisle.reach = "rtr-BS2"  # carried to another aisle: BS1's radio no longer reaches it
    response = await api.patch(f"/api/v1/retail/products/{product['id']}", json={"price": "9.10"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    lost = await eventually(lambda: [c for c in aisle.stations["rtr-BS1"].commands[-3:] if c.get("command") == "relay"
                                     and c["payload"].get("frame") and c["label_id"] == "rtr-EL1"])
    assert _price(aisle.screen) == Decimal("6.80")  # sent through BS1: lost
    assert isinstance(aisle.stations["rtr-BS1"], CoapBaseStation)  # the test platform runs CoAP: relays use it
    frame = base64.b64decode(lost[-1]["payload"]["frame"])
    assert frame_info(frame).diff and len(frame) < 400  # the price change travels as a small diff

    await aisle.stations["rtr-BS2"].publish("event", {"type": "label_joined", "label_id": "rtr-EL1", "rssi_dbm": -61})
    await eventually(lambda: _price(aisle.screen) == Decimal("9.10"))
    assert aisle.relayed[-1][0] == "rtr-BS2"
    assert (await _label_row(api))["base_station_id"] == "rtr-BS2"

    await aisle.label.publish("telemetry", {"battery_pct": 71.5, "rssi_dbm": -67, "base_station_id": "rtr-BS2"})

    async def reported() -> bool:
        row = await _label_row(api)
        return (row["battery_pct"], row["rssi_dbm"]) == (71.5, -67)

    await eventually(reported)


async def test_a_promotion_downloaded_ahead_switches_on_time_on_the_label_clock_while_offline(
    api: httpx.AsyncClient, aisle: Aisle
) -> None:
    product = await _product(api, "6003", "8.00")
    await api.put("/api/v1/retail/labels/rtr-EL1/binding", json={"product_id": product["id"]}, headers=ADMIN)
    await eventually(lambda: _price(aisle.screen) == Decimal("8.00"))
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    response = await api.post(f"/api/v1/retail/products/{product['id']}/schedules",
                              json={"at": at.isoformat(), "price": "8.00", "promo_price": "5.99",
                                    "promo_text": "限时特价"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    await eventually(lambda: [p.at for p in aisle.screen.pending] == [at])  # downloaded ahead, while in range

    reach, aisle.reach = aisle.reach, None  # from now on the label hears nothing: it switches on its own clock
    try:
        aisle.screen.tick(at - timedelta(seconds=1))
        assert _price(aisle.screen) == Decimal("8.00")
        aisle.screen.tick(at)
        assert _price(aisle.screen) == Decimal("5.99")
        switched_at = aisle.screen.shown_log[-1][0]
        assert abs((switched_at - at).total_seconds()) <= 1.0
    finally:
        aisle.reach = reach


async def test_a_handheld_scan_through_the_base_station_binds_the_label(api: httpx.AsyncClient, aisle: Aisle) -> None:
    product = await _product(api, "6004", "4.40")
    station = aisle.stations[aisle.reach or "rtr-BS1"]
    await station.publish("event", {"type": "label_scanned", "label_id": "rtr-EL1", "product_code": "6004"})
    await eventually(lambda: _price(aisle.screen) == Decimal("4.40"))
    row = await _label_row(api)
    assert (row["product_id"], row["bound_by"]) == (product["id"], f"scan:{aisle.reach}")
