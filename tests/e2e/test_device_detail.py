"""Device detail: the telemetry chart from the store (downsampled, ranges), credentials rotate/revoke with the
new secret shown once, and commands that reach the device over MQTT."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest

from broker import topics
from fleet.models import Device
from retail.models import Calibration, CalibrationGrant
from telemetry import Reading
from tests.e2e.conftest import sign_in
from tests.factories import eventually

pytestmark = pytest.mark.browser


def sensors(site) -> list[str]:
    return [d for d in site.devices["acme"] if "ENVFT01" in d]


async def test_chart_shows_downsampled_telemetry_for_each_range(site, new_page) -> None:
    device = sensors(site)[0]
    now = datetime.now(UTC)
    # Two days of a reading every 2 minutes: 1,440 readings.
    readings = [
        Reading(device_id=device, measurement="env_sensor.telemetry", ts=now - timedelta(minutes=2 * i),
                fields={"temperature_c": 20.0 + (i % 30) / 10, "humidity_pct": 70.0}, tags={"market": "FT01"})
        for i in range(1440)
    ]
    await site.platform.services["store"].write(readings)
    page = await new_page()
    await sign_in(page, site, "mia", next_path=f"/devices/{device}")
    await page.wait_for_selector("#chart[data-ready] canvas")
    day_points = int(await page.get_attribute("#chart", "data-points") or 0)
    assert 600 <= day_points <= 721  # minute buckets with a reading: one every 2 minutes over 24 h
    await page.check("input[name=range][value='1h']")
    await page.wait_for_function("Number(document.querySelector('#chart').dataset.points) <= 31")
    await page.check("input[name=range][value='7d']")
    await page.wait_for_function("Number(document.querySelector('#chart').dataset.points) >= 47")
    assert int(await page.get_attribute("#chart", "data-points") or 0) <= 49  # hour buckets over two days
    await page.select_option("select[name=field]", "humidity_pct")
    await page.wait_for_selector("#chart[data-ready] canvas")
    assert await page.locator("#chart-note").inner_text() == ""


async def test_series_of_an_unknown_range_is_refused_with_a_reason(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "mia")
    response = await page.goto(f"{site.url}/devices/{sensors(site)[0]}/series?field=temperature_c&range=1y")
    assert response.status == 422
    assert "range" in await response.text()


async def test_rotating_shows_the_new_secret_once_and_the_old_one_stops_working(site, new_page) -> None:
    device = sensors(site)[1]
    old = site.secrets[device]
    page = await new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await sign_in(page, site, "mia", next_path=f"/devices/{device}")
    await page.click("button[data-action=rotate]")
    new = (await page.locator("[data-secret]").inner_text()).strip()
    assert new and new != old
    assert await page.locator("tr[data-credential][data-state=revoked]").count() == 1
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device, password=old):
            pass
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device, password=new):
        pass
    site.secrets[device] = new
    await page.reload()
    assert await page.locator("[data-secret]").count() == 0  # shown once


async def test_revoking_leaves_no_active_secret(site, new_page) -> None:
    device = sensors(site)[2]
    page = await new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await sign_in(page, site, "mia", next_path=f"/devices/{device}")
    await page.click("button[data-action=revoke]")
    await page.wait_for_selector("[data-revoked='1']")
    assert await page.locator("tr[data-credential][data-state=active]").count() == 0
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device,
                                  password=site.secrets[device]):
            pass


async def test_a_command_reaches_the_device(site, new_page) -> None:
    device = sensors(site)[0]
    page = await new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await sign_in(page, site, "mia", next_path=f"/devices/{device}")
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device,
                              password=site.secrets[device]) as client:
        await client.subscribe(topics.device_down_filter("FT01", device), qos=1)
        await page.click("button[data-command=reboot]")
        await page.wait_for_selector("[data-command-result=ok]")
        async with asyncio.timeout(10):
            async for message in client.messages:
                if str(message.topic).endswith("/down/cmd"):
                    command = json.loads(message.payload)
                    break
    assert command["command"] == "reboot" and command["id"]


async def test_manager_sees_the_device_but_cannot_command_it_or_touch_credentials(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "manny", next_path=f"/devices/{sensors(site)[0]}")
    assert await page.locator("button[data-command]").count() == 0
    assert await page.locator("button[data-action=rotate]").count() == 0
    response = await page.request.post(f"{site.url}/devices/{sensors(site)[0]}/credentials/rotate")
    assert response.status == 403


def scales(site) -> list[str]:
    return [d for d in site.devices["acme"] if "SCAFT01" in d]


async def test_calibration_is_authorised_for_a_window_of_at_most_half_an_hour(site, new_page) -> None:
    device = scales(site)[-1]
    page = await new_page()
    await sign_in(page, site, "mia", next_path=f"/devices/{device}")
    offered = set(await page.eval_on_selector_all("button[data-command]", "els => els.map(e => e.dataset.command)"))
    assert offered == {"reboot", "ping", "authorise_calibration"}  # a scale has no LED to flash
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device,
                              password=site.secrets[device]) as client:
        await client.subscribe(topics.device_down_filter("FT01", device), qos=1)
        asked = datetime.now(UTC)
        await page.click("button[data-command=authorise_calibration]")
        await page.wait_for_selector("[data-command-result=ok]")
        async with asyncio.timeout(10):
            async for message in client.messages:
                if str(message.topic).endswith("/down/cmd"):
                    command = json.loads(message.payload)
                    break
    assert command["command"] == "authorise_calibration" and command["grant_id"] != "preview"
    until = datetime.fromisoformat(command["valid_until"])
    assert asked < until <= asked + timedelta(minutes=31)  # SZ 6.2.7: a window the server grants, not forever
    grant = await CalibrationGrant.get(id=command["grant_id"])  # recorded, so the scale's report is judged by it
    assert (grant.scale_id, grant.granted_by, grant.used_at) == (device, "user:mia", None)
    assert abs((grant.valid_until - until).total_seconds()) < 1
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device,
                              password=site.secrets[device]) as client:
        report = {"seq": 9001, "payload": {"type": "calibrated", "grant_id": grant.id, "reference_kg": 10.0,
                                        "measured_kg": 10.001}}
        await client.publish(topics.up_topic("FT01", device, "event"), json.dumps(report).encode(), qos=1)

    async def recorded() -> bool:
        return await Calibration.filter(scale_id=device, grant_id=grant.id, accepted=True).exists()

    await eventually(recorded, within=20)


async def test_an_event_the_device_sent_and_its_firmware_are_on_its_page(site, new_page) -> None:
    device = scales(site)[-2]
    await Device.filter(id=device).update(firmware_version="4.2.0")  # what a finished OTA job writes
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device,
                              password=site.secrets[device]) as client:
        message = {"seq": 1, "payload": {"type": "fault", "code": "LOADCELL-7", "message": "load cell drift"}}
        await client.publish(topics.up_topic("FT01", device, "event"), json.dumps(message).encode(), qos=1)
    page = await new_page()
    await sign_in(page, site, "manny", next_path=f"/devices/{device}")
    assert await page.inner_text("[data-firmware]") == "4.2.0"

    async def shown() -> bool:
        await page.reload()
        return "LOADCELL-7" in await page.inner_text("ol.history")

    await eventually(shown, within=20)
    assert "fault" in await page.inner_text("ol.history")


async def test_presence_history_lists_when_the_device_came_and_went(site, new_page) -> None:
    device = scales(site)[-3]
    page = await new_page()
    await sign_in(page, site, "manny", next_path=f"/devices/{device}")
    assert await page.locator("#presence-history li[data-presence]").count() == 0  # never connected yet
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device, username=device,
                              password=site.secrets[device]):
        pass  # connects, then goes

    async def came_and_went() -> list[str]:
        await page.reload()
        shown = await page.eval_on_selector_all("#presence-history li[data-presence]",
                                                "els => els.map(e => e.dataset.presence)")
        return shown if len(shown) >= 2 else []

    shown = await eventually(came_and_went, within=20)
    assert shown[:2] == ["offline", "online"]  # newest first
    text = await page.inner_text("#presence-history")
    assert "连接断开" in text and "已连接" in text  # why, in the reader's language


async def test_dragging_across_the_chart_zooms_in_and_a_double_click_zooms_back_out(site, new_page) -> None:
    device = sensors(site)[0]
    now = datetime.now(UTC)  # ten hours of readings, whatever other tests wrote
    await site.platform.services["store"].write([
        Reading(device_id=device, measurement="env_sensor.telemetry", ts=now - timedelta(minutes=2 * i),
                fields={"temperature_c": 21.0, "humidity_pct": 70.0}, tags={"market": "FT01"}) for i in range(300)])
    page = await new_page()
    await sign_in(page, site, "mia", next_path=f"/devices/{device}")
    await page.wait_for_selector("#chart[data-ready][data-x-min] .u-over")

    async def shown() -> float:
        box = await page.eval_on_selector("#chart", "b => [Number(b.dataset.xMin), Number(b.dataset.xMax)]")
        return box[1] - box[0]

    full = await shown()
    await page.locator("#chart .u-over").scroll_into_view_if_needed()
    over = await page.locator("#chart .u-over").bounding_box()
    y = over["y"] + over["height"] / 2
    await page.mouse.move(over["x"] + over["width"] * 0.4, y)
    await page.mouse.down()
    await page.mouse.move(over["x"] + over["width"] * 0.6, y, steps=8)
    await page.mouse.up()
    span = "(b => b.dataset.xMax - b.dataset.xMin)(document.querySelector('#chart'))"
    await page.wait_for_function(f"{span} < {full} * 0.5")
    assert 0.1 * full < await shown() < 0.3 * full  # about the fifth that was dragged over
    await page.mouse.dblclick(over["x"] + over["width"] / 2, y)
    await page.wait_for_function(f"{span} >= {full} * 0.99")


async def test_times_are_shown_in_the_markets_own_time_zone(site, new_page) -> None:
    from api.i18n import format_datetime
    from fleet.models import Vendor
    from fleet.schemas import DeviceCreate, MarketCreate

    registry = site.platform.registry
    await registry.create_market(MarketCreate(code="UR03", name="乌鲁木齐北园春市场", timezone="Asia/Urumqi"))
    result = await registry.register_devices(await Vendor.get(code="acme"), [
        DeviceCreate(serial="ENVUR03000", kind="env_sensor", market="UR03")])  # type: ignore[arg-type]
    far_west = await Device.get(id=result.rows[0].device_id)
    east = await Device.get(id=sensors(site)[0])
    page = await new_page()
    await sign_in(page, site, "ada")
    for device, timezone in ((far_west, "Asia/Urumqi"), (east, "Asia/Shanghai")):
        await page.goto(f"{site.url}/devices/{device.id}")
        shown = (await page.inner_text("td[data-created]")).strip()  # when it was registered
        assert shown == format_datetime(device.created_at, timezone)
        assert shown != format_datetime(device.created_at, "UTC")  # not the server's clock
