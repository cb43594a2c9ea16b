"""Retail through the running platform: the HTTP API, the embedded MQTT broker and devices speaking the real
protocol (docs/protocol.md). A base station receives `relay` commands on its `down/cmd` and hands them to its
label (`retail.esl_codec.LabelScreen`, what the ESL simulator uses); the label and the scale publish their
events on their own `up/` topics with their own credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import httpx
import pytest

from retail.esl_codec import LabelScreen
from retail.render import LabelSpec, price_box, read_price
from tests.factories import ADMIN, create_vendor, ensure_market

MARKET = "RT-1"
SPEC = LabelSpec(296, 128, "bwr")


class Device:
    """One MQTT device: publishes numbered messages, collects the commands it receives."""

    def __init__(self, host: str, port: int, device_id: str, secret: str) -> None:
        self.device_id, self.secret = device_id, secret
        self.host, self.port = host, port
        self.commands: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.held_version = -1  # scales: the PLU table version it has reported holding
        self.on_command: Callable[[dict[str, Any]], Any] | None = None
        self._seq = itertools.count(1)
        self.client: aiomqtt.Client | None = None

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        assert self.client is not None
        body = {"seq": next(self._seq), "ts": datetime.now(UTC).isoformat(), "payload": payload}
        await self.client.publish(f"mf/v1/{MARKET}/{self.device_id}/up/{channel}", json.dumps(body), qos=1)

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Device]:
        async with aiomqtt.Client(self.host, self.port, identifier=self.device_id, username=self.device_id,
                                  password=self.secret) as client:
            self.client = client
            await client.subscribe(f"mf/v1/{MARKET}/{self.device_id}/down/cmd", qos=1)
            task = asyncio.create_task(self._listen(client))
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            command = json.loads(bytes(message.payload))
            self.commands.append(command)
            if self.on_command is not None:
                try:
                    result = self.on_command(command)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as err:  # a broken test device must show up in the test, not end its listener
                    self.errors.append(repr(err))


class CoapBaseStation:
    """An ESL base station on CoAP (its kind's transport): observes `down/cmd` under OSCORE with its own key."""

    def __init__(self, port: int, device_id: str, secret: str) -> None:
        self.uri = f"coap://127.0.0.1:{port}"
        self.device_id, self.secret = device_id, secret
        self.commands: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.on_command: Callable[[dict[str, Any]], Any] | None = None

    @contextlib.asynccontextmanager
    async def observing(self) -> AsyncIterator[CoapBaseStation]:
        import aiocoap
        from aiocoap.numbers import codes

        from broker.coap_security import device_client_context

        context = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        context.client_credentials[self.uri + "/*"] = device_client_context(self.device_id, self.secret)
        request = context.request(aiocoap.Message(code=codes.GET, uri=f"{self.uri}/mf/v1/{self.device_id}/down/cmd",
                                                  observe=0))
        task = asyncio.create_task(self._listen(request))
        try:
            yield self
        finally:
            # End the observation first: a task cancelled inside aiocoap's observation iterator can stay
            # "cancelling" for good (seen as a 300 s hang of this fixture's teardown), so it is not awaited blindly.
            request.observation.cancel()
            task.cancel()
            await asyncio.wait({task}, timeout=10)
            await context.shutdown()

    async def _listen(self, request: Any) -> None:
        first = await request.response
        if first.payload:
            await self._handle(json.loads(first.payload))
        async for notification in request.observation:
            if notification.payload:
                await self._handle(json.loads(notification.payload))

    async def _handle(self, command: dict[str, Any]) -> None:
        self.commands.append(command)
        if self.on_command is not None:
            try:
                await self.on_command(command)
            except Exception as err:
                self.errors.append(repr(err))


async def eventually(check: Callable[[], Any], within_s: float = 60.0) -> Any:
    """Wait for a condition the platform reaches asynchronously (a bound on waiting, not a timing assertion)."""
    async with asyncio.timeout(within_s):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def floor(api: httpx.AsyncClient, platform) -> AsyncIterator[dict[str, Device]]:
    await ensure_market(api, MARKET)
    assert (await api.post(f"/api/v1/admin/markets/{MARKET}/stalls", json={"number": "A01", "holder_name": "王记"},
                           headers=ADMIN)).status_code in (201, 409)
    key = await create_vendor(api, "rtv")
    rows = [{"serial": "BS1", "kind": "esl_base_station", "market": MARKET},
            {"serial": "EL1", "kind": "esl", "market": MARKET, "stall": "A01"},
            {"serial": "SC1", "kind": "scale", "market": MARKET, "stall": "A01"}]
    created = (await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers={"X-API-Key": key})).json()
    secrets = {row["device_id"]: row["secret"] for row in created["rows"]}
    port = platform.settings.broker.port
    devices = {name: Device("127.0.0.1", port, f"rtv-{name}", secrets[f"rtv-{name}"]) for name in ("BS1", "EL1", "SC1")}
    async with contextlib.AsyncExitStack() as stack:
        for device in devices.values():
            await stack.enter_async_context(device.connected())
        coap = platform.services.get("coap")
        if coap is not None:  # the platform relays to base stations over CoAP when it runs CoAP: be one there
            station = CoapBaseStation(coap.port, "rtv-BS1", secrets["rtv-BS1"])
            station.publish = devices["BS1"].publish  # type: ignore[attr-defined]  # its events still go up by MQTT
            await stack.enter_async_context(station.observing())
            devices["BS1"] = station  # type: ignore[assignment]
        yield devices


@pytest.fixture(scope="module")
async def label(floor: dict[str, Device]) -> LabelScreen:
    """The label's screen; its base station relays to it, and it reports what it shows as itself."""
    screen = LabelScreen(296, 128, "bwr")

    async def relay(command: dict[str, Any]) -> None:
        if command.get("command") == "relay" and command["label_id"] == "rtv-EL1":
            for event in screen.apply(command["payload"], datetime.now(UTC)):
                await floor["EL1"].publish("event", event)

    floor["BS1"].on_command = relay
    await floor["BS1"].publish("event", {"type": "label_joined", "label_id": "rtv-EL1", "rssi_dbm": -55})
    return screen


@pytest.fixture(scope="module")
async def scale(floor: dict[str, Device]) -> Device:
    """The scale keeps the PLU table it is sent and reports the version it holds."""
    device = floor["SC1"]

    async def apply(command: dict[str, Any]) -> None:
        if command.get("command") == "set_plu":
            await device.publish("state", {"plu_version": command["version"]})
            device.held_version = command["version"]

    device.on_command = apply
    return device


def _price(screen: LabelScreen) -> Decimal | None:
    return read_price(screen.image, price_box(SPEC)) if screen.image is not None else None


async def _product(api: httpx.AsyncClient, code: str, price: str) -> dict[str, Any]:
    body = {"market": MARKET, "stall_no": "A01", "code": code, "name": "西红柿", "price": price}
    response = await api.post("/api/v1/retail/products", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


async def test_bind_and_change_price_the_label_shows_it_and_the_scale_gets_it(
    api: httpx.AsyncClient, label: LabelScreen, scale: Device
) -> None:
    product = await _product(api, "5001", "6.80")
    response = await api.put("/api/v1/retail/labels/rtv-EL1/binding", json={"product_id": product["id"]},
                             headers=ADMIN)
    assert response.status_code == 200, response.text
    await eventually(lambda: _price(label) == Decimal("6.80"))

    response = await api.patch(f"/api/v1/retail/products/{product['id']}", json={"price": "7.20"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    await eventually(lambda: _price(label) == Decimal("7.20"))
    entry = {"product_code": "5001", "product_name": "西红柿", "unit_price": "7.20"}
    await eventually(lambda: any(c.get("command") == "set_plu" and entry in c["entries"] for c in scale.commands))

    async def confirmed() -> bool:
        row = (await api.get("/api/v1/retail/labels/rtv-EL1", headers=ADMIN)).json()
        return row["pending_sha256"] is None and row["shown"]["0"] == label.image.sha256

    await eventually(confirmed)
    history = (await api.get(f"/api/v1/retail/products/{product['id']}/prices", headers=ADMIN)).json()
    assert [(h["source"], h["new_price"]) for h in history] == [("api", "7.20"), ("api", "6.80")]


async def test_price_set_on_the_scale_reaches_the_label_and_the_platform(
    api: httpx.AsyncClient, label: LabelScreen, scale: Device
) -> None:
    product = await _product(api, "5002", "9.90")
    await api.put("/api/v1/retail/labels/rtv-EL1/binding", json={"product_id": product["id"]}, headers=ADMIN)
    await eventually(lambda: _price(label) == Decimal("9.90"))

    async def scale_holds_latest() -> bool:
        row = (await api.get(f"/api/v1/retail/products/{product['id']}", headers=ADMIN)).json()
        return scale.held_version >= row["plu_version"]

    # The scale reported the table before it edits (same connection, QoS 1: the platform sees them in order).
    await eventually(scale_holds_latest)
    await scale.publish("event", {"type": "price_set", "product_code": "5002", "unit_price": 8.5})
    await eventually(lambda: _price(label) == Decimal("8.50"))
    row = (await api.get(f"/api/v1/retail/products/{product['id']}", headers=ADMIN)).json()
    assert row["price"] == "8.50"
    history = (await api.get(f"/api/v1/retail/products/{product['id']}/prices", headers=ADMIN)).json()
    assert (history[0]["source"], history[0]["actor"], history[0]["accepted"]) == ("scale", "rtv-SC1", True)


async def test_led_flash_reaches_the_label(api: httpx.AsyncClient, label: LabelScreen) -> None:
    response = await api.post("/api/v1/retail/labels/rtv-EL1/flash", json={"colour": "blue", "seconds": 30},
                              headers=ADMIN)
    assert response.status_code == 202, response.text
    await eventually(lambda: label.led_on(datetime.now(UTC)) == "blue")


async def test_transactions_are_stored_and_queryable_with_totals(api: httpx.AsyncClient, scale: Device) -> None:
    now = datetime.now(UTC)
    for n, total in enumerate((10.0, 99.0)):  # the second one's total is wrong
        await scale.publish("event", {
            "type": "transaction", "order_no": f"RT{n}", "time": now.isoformat(), "market_code": MARKET,
            "stall_no": "A01", "scale_id": "rtv-SC1", "product_code": "5001", "product_name": "西红柿",
            "weight_kg": 1.0, "unit_price": 10.0, "total": total,
        })

    async def both() -> dict[str, Any] | None:
        page = (await api.get("/api/v1/retail/transactions", params={"market": MARKET, "scale_id": "rtv-SC1"},
                              headers=ADMIN)).json()
        return page if page["totals"]["count"] == 2 else None

    page = await eventually(both)
    assert page["totals"]["amount"] == "109.00"
    flags = {t["order_no"]: t["flags"] for t in page["items"]}
    assert flags["RT0"] == [] and "total_mismatch" in flags["RT1"]
    receipt = (await api.get(f"/api/v1/retail/transactions/{page['items'][0]['id']}/receipt", headers=ADMIN)).json()
    assert receipt["qr"].startswith(f"MF-TRACE:{MARKET}:A01:")
    svg = await api.get(f"/api/v1/retail/transactions/{page['items'][0]['id']}/qr.svg", headers=ADMIN)
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content


async def test_calibration_with_a_granted_authorisation_is_recorded_and_a_reuse_refused(
    api: httpx.AsyncClient, scale: Device
) -> None:
    response = await api.post("/api/v1/retail/scales/rtv-SC1/calibration-grants", json={"minutes": 10},
                              headers=ADMIN)
    assert response.status_code == 201, response.text
    grant = response.json()["id"]
    await eventually(lambda: any(c.get("grant_id") == grant for c in scale.commands))
    for _ in range(2):
        await scale.publish("event", {"type": "calibrated", "grant_id": grant, "reference_kg": 10.0,
                                      "measured_kg": 10.001})

    async def two() -> list[dict[str, Any]] | None:
        rows = (await api.get("/api/v1/retail/scales/rtv-SC1/calibrations", headers=ADMIN)).json()
        return rows if len(rows) == 2 else None

    rows = await eventually(two)
    assert sorted((r["accepted"], r["refusal"]) for r in rows) == [(False, "reused"), (True, "")]


async def test_bad_input_gets_a_clear_answer(api: httpx.AsyncClient) -> None:
    product = await _product(api, "5003", "1.00")
    bad_price = await api.patch(f"/api/v1/retail/products/{product['id']}", json={"price": "-1"}, headers=ADMIN)
    assert bad_price.status_code == 422 and "price" in bad_price.json()["detail"]
    naive = await api.post(f"/api/v1/retail/products/{product['id']}/schedules",
                           json={"at": "2030-01-01T08:00:00", "price": "1.00"}, headers=ADMIN)
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]
    past = await api.post(f"/api/v1/retail/products/{product['id']}/schedules",
                          json={"at": "2020-01-01T08:00:00+08:00", "price": "1.00"}, headers=ADMIN)
    assert past.status_code == 422 and "future" in past.json()["detail"]
    duplicate = await api.post("/api/v1/retail/products", json={"market": MARKET, "stall_no": "A01", "code": "5003",
                                                                "name": "x", "price": "1"}, headers=ADMIN)
    assert duplicate.status_code == 409
    not_a_label = await api.put("/api/v1/retail/labels/rtv-SC1/binding", json={"product_id": product["id"]},
                                headers=ADMIN)
    assert not_a_label.status_code == 422 and "not a shelf label" in not_a_label.json()["detail"]
    too_long = await api.post("/api/v1/retail/scales/rtv-SC1/calibration-grants", json={"minutes": 999},
                              headers=ADMIN)
    assert too_long.status_code == 422


async def test_a_price_list_updates_products_and_the_bound_label_in_one_call(
    api: httpx.AsyncClient, label: LabelScreen
) -> None:
    first, second = await _product(api, "5101", "3.00"), await _product(api, "5102", "4.00")
    await api.put("/api/v1/retail/labels/rtv-EL1/binding", json={"product_id": second["id"]}, headers=ADMIN)
    await eventually(lambda: _price(label) == Decimal("4.00"))
    body = {"items": [{"product_id": first["id"], "price": "3.30"}, {"product_id": second["id"], "price": "4.40"}]}
    response = await api.post("/api/v1/retail/price-lists", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 2, "labels": 1}
    await eventually(lambda: _price(label) == Decimal("4.40"))
    assert (await api.get(f"/api/v1/retail/products/{first['id']}", headers=ADMIN)).json()["price"] == "3.30"

    twice = {"items": [{"product_id": first["id"], "price": "1"}, {"product_id": first["id"], "price": "2"}]}
    assert (await api.post("/api/v1/retail/price-lists", json=twice, headers=ADMIN)).status_code == 422
    unknown = {"items": [{"product_id": 999_999, "price": "1"}]}
    assert (await api.post("/api/v1/retail/price-lists", json=unknown, headers=ADMIN)).status_code == 404
    assert (await api.post("/api/v1/retail/price-lists", json={"items": []}, headers=ADMIN)).status_code == 422


async def test_the_ledger_is_queryable_by_stall_day_and_product_and_a_label_page_can_be_viewed(
    api: httpx.AsyncClient, scale: Device, label: LabelScreen
) -> None:
    day = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()  # the market's business day
    await scale.publish("event", {
        "type": "transaction", "order_no": "DAY1", "time": datetime.now(UTC).isoformat(), "market_code": MARKET,
        "stall_no": "A02", "scale_id": "rtv-SC1", "product_code": "7001", "product_name": "黄瓜",
        "weight_kg": 2.0, "unit_price": 5.0, "total": 10.0,
    })
    params = {"market": MARKET, "stall_no": "A02", "day": day, "product_code": "7001"}

    async def stored() -> dict[str, Any] | None:
        page = (await api.get("/api/v1/retail/transactions", params=params, headers=ADMIN)).json()
        return page if page["totals"]["count"] == 1 else None

    page = await eventually(stored)
    assert page["totals"] == {"count": 1, "weight_kg": "2.000", "amount": "10.00"}
    summary = (await api.get("/api/v1/retail/transactions/summary", params={"by": "product", "stall_no": "A02"},
                             headers=ADMIN)).json()
    assert summary == [{"product": "7001", "count": 1, "weight_kg": "2.000", "amount": "10.00"}]
    image = await api.get("/api/v1/retail/labels/rtv-EL1/image.png", params={"page": 3}, headers=ADMIN)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


async def test_concurrent_price_changes_over_http_each_get_their_own_answer_and_the_last_one_shows(
    api: httpx.AsyncClient, label: LabelScreen
) -> None:
    product = await _product(api, "5201", "2.00")
    await api.put("/api/v1/retail/labels/rtv-EL1/binding", json={"product_id": product["id"]}, headers=ADMIN)
    await eventually(lambda: _price(label) == Decimal("2.00"))
    prices = [f"{3 + n}.{n % 10}0" for n in range(20)]
    bodies = [{"price": p} for p in prices[:10]] + [{"price": "12.345"}] + [{"price": p} for p in prices[10:]]

    answers = await asyncio.gather(*(api.patch(f"/api/v1/retail/products/{product['id']}", json=body, headers=ADMIN)
                                     for body in bodies), api.patch("/api/v1/retail/products/999999",
                                                                    json={"price": "1.00"}, headers=ADMIN))

    assert answers[10].status_code == 422 and "price" in answers[10].json()["detail"]  # the bad one, alone
    assert answers[-1].status_code == 404
    good = answers[:10] + answers[11:-1]
    assert all(a.status_code == 200 for a in good), [a.text for a in good if a.status_code != 200]
    assert sorted(a.json()["price"] for a in good) == sorted(prices)  # each caller sees its own change
    history = (await api.get(f"/api/v1/retail/products/{product['id']}/prices", headers=ADMIN)).json()
    changes = list(reversed(history))[1:]  # oldest first, after the creation
    assert sorted(h["new_price"] for h in changes) == sorted(prices)  # every change once
    assert [h["old_price"] for h in changes] == ["2.00"] + [h["new_price"] for h in changes[:-1]]  # in order
    final = Decimal(changes[-1]["new_price"])
    assert Decimal((await api.get(f"/api/v1/retail/products/{product['id']}", headers=ADMIN)).json()["price"]) == final
    await eventually(lambda: _price(label) == final)  # the label ends on the change that arrived last


async def test_a_label_reporting_a_larger_colour_panel_gets_pages_rendered_for_it(
    api: httpx.AsyncClient, floor: dict[str, Device], label: LabelScreen
) -> None:
    """Runs last in this module: it turns the module's label into a 400×300 black/white/red/yellow one."""
    panel = LabelScreen(400, 300, "bwry")
    station = floor["BS1"]

    async def relay(command: dict[str, Any]) -> None:
        if command.get("command") == "relay" and command["label_id"] == "rtv-EL1":
            for event in panel.apply(command["payload"], datetime.now(UTC)):
                await floor["EL1"].publish("event", event)

    station.on_command = relay
    await floor["EL1"].publish("state", {"resolution": [400, 300], "colours": "bwry"})

    async def resized() -> bool:
        row = (await api.get("/api/v1/retail/labels/rtv-EL1", headers=ADMIN)).json()
        return row.get("width") == 400 and row.get("colours") == "bwry"

    await eventually(resized)
    product = await _product(api, "5901", "123.45")
    await api.put("/api/v1/retail/labels/rtv-EL1/binding", json={"product_id": product["id"]}, headers=ADMIN)
    spec = LabelSpec(400, 300, "bwry")
    await eventually(lambda: panel.image is not None and read_price(panel.image, price_box(spec)) == Decimal("123.45"))
    assert (panel.image.width, panel.image.height, panel.image.colours) == (400, 300, "bwry")

