"""The alerts inbox: an alert raised by a simulated cold-chain locker appears live; acknowledging and resolving
it moves it to the handling archive; assignment and comments are kept in its history."""

from __future__ import annotations

import itertools
import json

import aiomqtt
import pytest

from broker import topics
from tests.e2e.conftest import sign_in
from tests.factories import eventually

pytestmark = pytest.mark.browser
_seq = itertools.count()

RULE = {
    "id": "e2e-locker-warm",
    "name": "Locker compartment too warm",
    "severity": "critical",
    "category": "safety",
    "scope": {"kind": "cold_locker", "channel": "telemetry"},
    "condition": {"type": "range", "field": "compartments[].temperature_c", "min": 1, "max": 10},
    "message": "Locker {device_id} compartment {compartment}: {value} °C",
}


@pytest.fixture(scope="module")
async def warm_rule(site):
    await site.rules.create_rule(RULE)
    yield RULE["id"]
    await site.rules.delete_rule(RULE["id"])


async def locker_reports(site, device_id: str, compartment: int, temperature: float) -> None:
    """The locker, over MQTT with its own credential, reports one compartment's temperature."""
    async with aiomqtt.Client("127.0.0.1", site.mqtt_port, identifier=device_id, username=device_id,
                              password=site.secrets[device_id]) as client:
        message = {"seq": next(_seq), "payload": {"compartments": [
            {"compartment": compartment, "temperature_c": temperature, "door": "closed_locked"}]}}
        await client.publish(topics.up_topic("FT01", device_id, "telemetry"), json.dumps(message).encode(), qos=1)


async def settled(page) -> None:
    """Wait until no live refresh is scheduled and no htmx request is in flight (the rows stay put)."""
    await page.wait_for_function("!window.mfRefreshPending && !document.querySelector('.htmx-request')")


def lockers(site) -> list[str]:
    return [d for d in site.devices["coldco"] if "COLFT01" in d]


async def test_locker_alert_appears_live_and_ack_then_resolve_archives_it(site, new_page, warm_rule) -> None:
    locker = lockers(site)[0]
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/alerts")
    await page.evaluate("window.__sameDocument = true")
    await page.wait_for_selector("#live-status[data-state=on]")
    assert await page.locator("tr[data-alert]").count() == 0, await page.inner_text("#inbox")

    await locker_reports(site, locker, 1, 14.5)
    row = page.locator("tr[data-alert]").filter(has_text=locker)
    await row.wait_for()
    assert await row.get_attribute("data-status") == "open"
    assert "14.5" in (await row.inner_text())
    assert await page.evaluate("window.__sameDocument") is True  # it came in without a reload

    await row.locator("button[data-action=ack]").click()
    await page.wait_for_selector("tr[data-alert][data-status=acknowledged]")
    await settled(page)
    await page.locator("tr[data-alert] button[data-action=resolve]").click()
    await page.locator("[data-message]").filter(has_text="已解除并归档").wait_for()
    assert await page.locator("tr[data-alert]").count() == 0  # out of the inbox

    await page.click("a[data-view=archive]")
    archived = page.locator("tr[data-alert][data-status=resolved]").filter(has_text=locker)
    await archived.wait_for()
    assert "user:manny" in await archived.inner_text()


async def test_assignment_and_comment_are_kept_in_the_alert_history(site, new_page, warm_rule) -> None:
    locker = lockers(site)[1]
    page = await new_page()
    await sign_in(page, site, "mia", next_path="/alerts")
    await page.wait_for_selector("#live-status[data-state=on]")
    await locker_reports(site, locker, 2, 12.0)
    row = page.locator("tr[data-alert]").filter(has_text=locker)
    await row.wait_for()
    await settled(page)
    await row.locator("summary").click()
    await row.locator("input[name=assignee]").fill("zhang.wei")
    await row.locator("button[data-action=assign]").click()
    await page.locator("[data-message]").filter(has_text="已指派").wait_for()
    await settled(page)
    row = page.locator("tr[data-alert]").filter(has_text=locker)
    assert "zhang.wei" in await row.inner_text()
    await row.locator("summary").click()
    await row.locator("input[name=comment]").fill("门封条已更换")
    await row.locator("button[data-action=comment]").click()
    await page.locator("[data-message]").filter(has_text="添加备注").wait_for()
    await settled(page)

    await page.locator("tr[data-alert]").filter(has_text=locker).locator("a").first.click()
    history = await page.inner_text("ol.history")
    assert "门封条已更换" in history and "指派" in history and "user:mia" in history


async def test_acknowledging_twice_says_why_not(site, new_page, warm_rule) -> None:
    locker = lockers(site)[0]
    page = await new_page()
    await sign_in(page, site, "mia", next_path="/alerts")
    await page.wait_for_selector("#live-status[data-state=on]")
    await locker_reports(site, locker, 3, 20.0)
    row = page.locator("tr[data-alert]").filter(has_text="compartment 3")
    await row.wait_for()
    alert_id = await row.get_attribute("data-alert")
    await settled(page)
    await page.evaluate("window.mfLive.forEach(s => s.close())")  # this screen lost its live connection …
    await site.rules.alerts.acknowledge(int(alert_id), "user:someone-else")  # … while another handled it
    await row.locator("button[data-action=ack]").click()
    message = page.locator("[data-message][role=alert]")
    await message.wait_for()
    assert "someone-else" in await message.inner_text()


async def test_vendor_has_no_alerts_inbox(site, new_page) -> None:
    page = await new_page()
    await sign_in(page, site, "vera")
    response = await page.goto(f"{site.url}/alerts")
    assert response.status == 403


async def test_a_failed_food_test_gives_a_removal_task_and_closing_it_archives_the_alert(site, new_page) -> None:
    from rules.models import RemovalTask
    from tests.unit.rules.factories import envelope, food_result

    site.rules.process(envelope("FD-E2E", "food_detector", food_result(False, "R-E2E", stall="A01"), market="FT01"))
    task = await eventually(lambda: RemovalTask.filter(result_id="FD-E2E:R-E2E").first())
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/alerts")
    await page.click("a[data-view=tasks]")
    row = page.locator(f"tr[data-task='{task.id}']")
    await row.wait_for()
    text = await row.inner_text()
    assert "spinach" in text and "organophosphate" in text and "A01" in text
    await row.locator("button[type=submit]").click()  # no action said: the browser asks for it first
    assert await row.locator("input[name=action_taken]").evaluate("i => !i.validity.valid")
    await row.locator("input[name=action_taken]").fill("5 kg 菠菜已下架销毁")
    await row.locator("button[type=submit]").click()
    await page.locator("[data-message]").filter(has_text="已完成并归档").wait_for()
    assert await page.locator(f"tr[data-task='{task.id}']").count() == 0

    await page.click("a[data-view=archive]")
    archived = page.locator(f"tr[data-alert='{task.alert_id}'][data-status=resolved]")
    await archived.wait_for()
    assert "user:manny" in await archived.inner_text()
    refused = await page.request.post(f"{site.url}/removal-tasks/{task.id}/close", form={"action_taken": ""})
    assert refused.status == 422  # closing twice, or without saying what was done, is refused with a reason
