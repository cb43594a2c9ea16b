"""Prices and shelf-label pages against simulated devices on their real protocols (issues 8 and 10).

The market floor is `simulators.MarketSimulation` — the same simulators `marketfleet simulate` runs and
tests/integration/simulators drive: an ESL base station observing its commands over CoAP with OSCORE, two shelf
labels that decode the frames it relays (`retail.esl_codec.LabelScreen`) and a scale on MQTT that keeps the
PLU table it is sent. What a label shows is read from its decoded pixels (`retail.render.read_price`), as the
retail integration tests do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from accounts.models import AuditEntry
from fleet.models import Vendor
from fleet.schemas import DeviceCreate, StallCreate, VendorCreate
from retail.models import PriceChange, PriceSource, Product, ScheduledPrice, ScheduleState, ShelfLabel
from retail.render import LabelSpec, price_box, read_price
from simulators import Emission, Endpoints, MarketSimulation, SimulatedDevice
from tests.e2e.conftest import Site, sign_in
from tests.factories import eventually

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SPEC = LabelSpec(296, 128, "bwr")  # the simulated label's panel (simulators/generators.py EslGenerator)
WITHIN = 60.0  # a bound on waiting for the devices (the machine may be loaded), not a timing assertion


@dataclass
class Floor:
    sim: MarketSimulation
    station: SimulatedDevice
    labels: list[SimulatedDevice]
    scale: SimulatedDevice
    products: dict[str, Product]  # by PLU code

    def shown_price(self, label: SimulatedDevice) -> Decimal | None:
        image = label.generator.screen.image  # type: ignore[attr-defined]
        return read_price(image, price_box(SPEC)) if image is not None else None

    def scale_price(self, code: str) -> float | None:
        entry = next((e for e in self.scale.state.get("plu", []) if e["product_code"] == code), None)
        return entry["unit_price"] if entry else None


async def _product(site: Site, market: str, stall: str, code: str, name: str, price: str) -> Product:
    retail = site.platform.services["retail"]
    fields = {"stall_no": stall, "code": code, "name": name, "price": Decimal(price), "unit": "kg", "origin": "寿光"}
    return await retail.prices.create_product(market, fields, "test-setup", PriceSource.API)


async def stock_the_shop(site: Site) -> None:
    """A market's produce at work, for the screenshots (tests/e2e/test_screenshots.py): stalls, products, a
    promotion coming, a price changed on the dashboard, labels a base station reports and two of them bound.
    No device answers here, so the bound labels stay "sent, waiting for the label to confirm"."""
    retail = site.platform.services["retail"]
    registry = site.platform.registry
    if await Product.filter(market_id="FT01", code="1001").exists():
        return
    for number, holder in (("A01", "王记蔬菜"), ("B02", "李记肉铺")):
        await registry.create_stall("FT01", StallCreate(number=number, holder_name=holder))
    goods = [("A01", "1001", "西红柿", "6.80"), ("A01", "1002", "黄瓜", "4.50"), ("A01", "1003", "土豆", "2.60"),
             ("A01", "1004", "大白菜", "1.90"), ("B02", "2001", "五花肉", "28.00"), ("B02", "2002", "猪排骨", "36.00")]
    products = {code: await _product(site, "FT01", stall, code, name, price) for stall, code, name, price in goods}
    await retail.prices.update(products["1001"], {"price": Decimal("7.20")}, "user:manny", PriceSource.DASHBOARD)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    await retail.prices.schedule(products["1002"], start, Decimal("4.50"), Decimal("3.99"), "限时特价", "user:manny")
    await registry.create_vendor(VendorCreate(code="eslco", name="ESL Co"))
    rows = [DeviceCreate(serial="BS001", kind="esl_base_station", market="FT01")]  # type: ignore[arg-type]
    rows += [DeviceCreate(serial=f"EL{n:03d}", kind="esl", market="FT01", stall="A01")  # type: ignore[arg-type]
             for n in range(1, 4)]
    ids = [r.device_id for r in (await registry.register_devices(await Vendor.get(code="eslco"), rows)).rows]
    station, labels = ids[0], ids[1:]
    for n, label in enumerate(labels):
        await retail.labels.roamed(label, station, -58 - 4 * n)  # what the station's `label_joined` reports
        await retail.labels.seen(label, battery_pct=96.0 - 11 * n)
    await retail.labels.bind(labels[0], products["1001"], actor="user:manny")
    await retail.labels.bind(labels[1], products["1002"], actor="user:manny")
    # A morning's sales as the scales report them (the ledger's own entry point); one total is wrong.
    scale = (await registry.register_devices(await Vendor.get(code="eslco"), [
        DeviceCreate(serial="SC001", kind="scale", market="FT01", stall="A01")])).rows[0].device_id  # type: ignore[arg-type]
    now = datetime.now(UTC).replace(microsecond=0)
    sales = [("1001", "西红柿", 1.25, 7.2, 9.0), ("1002", "黄瓜", 0.8, 4.5, 3.6), ("1003", "土豆", 2.5, 2.6, 6.5),
             ("1004", "大白菜", 3.1, 1.9, 5.89), ("1001", "西红柿", 0.6, 7.2, 14.32)]
    for n, (code, name, kg, unit, total) in enumerate(sales):
        sold = now - timedelta(minutes=7 * (len(sales) - n))
        await retail.ledger.record(scale, {
            "order_no": f"A01-{n + 1:04d}", "time": sold.isoformat(), "market_code": "FT01", "stall_no": "A01",
            "scale_id": scale, "product_code": code, "product_name": name, "weight_kg": kg, "unit_price": unit,
            "total": total}, received_at=sold + timedelta(seconds=1))


@pytest.fixture(scope="module")
async def floor(site: Site, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Floor]:
    registry = site.platform.registry
    stalls = (("FT01", "A01", "王记蔬菜"), ("FT01", "B02", "李记肉铺"), ("NS02", "C03", "张记粮油"))
    for market, number, holder in stalls:
        await registry.create_stall(market, StallCreate(number=number, holder_name=holder))
    await registry.create_vendor(VendorCreate(code="eslco", name="ESL Co"))
    rows = [DeviceCreate(serial="BS001", kind="esl_base_station", market="FT01"),  # type: ignore[arg-type]
            DeviceCreate(serial="EL001", kind="esl", market="FT01", stall="A01"),  # type: ignore[arg-type]
            DeviceCreate(serial="EL002", kind="esl", market="FT01", stall="A01"),  # type: ignore[arg-type]
            DeviceCreate(serial="SC001", kind="scale", market="FT01", stall="A01")]  # type: ignore[arg-type]
    result = await registry.register_devices(await Vendor.get(code="eslco"), rows)
    creds = [{"device_id": r.device_id, "secret": r.secret, "kind": row.kind, "market": "FT01"}
             for r, row in zip(result.rows, rows, strict=True)]
    products = {
        "1001": await _product(site, "FT01", "A01", "1001", "西红柿", "6.80"),
        "1002": await _product(site, "FT01", "A01", "1002", "黄瓜", "4.50"),
        "2001": await _product(site, "FT01", "B02", "2001", "五花肉", "28.00"),
        "3001": await _product(site, "NS02", "C03", "3001", "东北大米", "5.20"),
    }
    endpoints = Endpoints(mqtt_port=site.mqtt_port, coap_port=site.platform.services["coap"].port, api_url=site.url)
    quiet = {"esl": 3600.0, "esl_base_station": 3600.0, "scale": 3600.0}  # no random readings, scans or price edits
    sim = MarketSimulation(creds, endpoints, outbox_path=Path(tmp_path_factory.mktemp("floor")) / "outbox.sqlite3",
                           console=Console(quiet=True), ack_timeout_s=5.0, intervals=quiet)
    by_kind = {kind: [d for d in sim.devices if d.kind.value == kind] for kind in ("esl", "esl_base_station", "scale")}
    station, labels, scale = by_kind["esl_base_station"][0], by_kind["esl"], by_kind["scale"][0]
    for label in labels:  # in range of this station (the generator would otherwise name a made-up one)
        label.generator.state["base_station_id"] = station.device_id
    await sim.start()
    try:
        await eventually(_true(lambda: all(d.stats.acked >= 1 for d in sim.devices)), WITHIN)
        # The base station reports the labels it hears (its `label_joined` events, over CoAP): their route.
        station.emit([Emission("event", {"type": "label_joined", "label_id": label.device_id, "rssi_dbm": -55})
                      for label in labels])

        async def routed() -> bool:
            ids = [label.device_id for label in labels]
            return await ShelfLabel.filter(device_id__in=ids, base_station_id=station.device_id).count() == len(ids)

        await eventually(routed, WITHIN)
        yield Floor(sim, station, labels, scale, products)
    finally:
        await sim.stop(drain_s=2)
        sim.close()


def _true(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def _bind_on_page(page: Any, site: Site, label_id: str, product: Product) -> None:
    await page.goto(f"{site.url}/labels?market=FT01")
    row = page.locator(f"tr[data-label='{label_id}']")
    await row.locator("select[name=product_id]").select_option(str(product.id))
    await row.locator("button[data-action=bind]").click()
    await page.wait_for_selector(f"tr[data-label='{label_id}'][data-product='{product.id}']")


async def test_price_set_in_the_dashboard_shows_on_the_scale_and_the_label(site, new_page, floor: Floor) -> None:
    label, product = floor.labels[0], floor.products["1001"]
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/labels")  # a market manager of FT01
    await _bind_on_page(page, site, label.device_id, product)
    assert await page.get_attribute(f"tr[data-label='{label.device_id}']", "data-state") == "pending"
    await eventually(_true(lambda: floor.shown_price(label) == Decimal("6.80")), WITHIN)
    # The table refreshes itself while a label has not confirmed: it turns to "shown" without a reload.
    await page.wait_for_selector(f"tr[data-label='{label.device_id}'][data-state='shown']", timeout=WITHIN * 1000)
    assert await page.locator("#labels[data-polling]").count() == 0  # and stops polling then

    await page.goto(f"{site.url}/prices?market=FT01&stall=A01")
    row = page.locator(f"tr[data-product='{product.id}']")
    await row.locator("input[name=price]").fill("7.35")
    await row.locator("button[data-action=set-price]").click()
    await page.wait_for_selector(f"tr[data-product='{product.id}'] td[data-price='7.35']")
    assert "7.35" in await page.inner_text("#flash [data-message]")

    # The label shows it (its decoded pixels, relayed by its base station over CoAP) …
    await eventually(_true(lambda: floor.shown_price(label) == Decimal("7.35")), WITHIN)
    # … and the stall's scale holds it in its PLU table (sent over MQTT).
    await eventually(_true(lambda: floor.scale_price("1001") == 7.35), WITHIN)

    # The history says who did it and from where.
    await page.locator(f"tr[data-product='{product.id}'] button[data-action=history]").click()
    newest = page.locator("#history tr[data-change]").first
    await newest.wait_for()
    assert await newest.get_attribute("data-source") == "dashboard"
    assert "user:manny" in await newest.inner_text()
    change = await PriceChange.filter(product_id=product.id).order_by("-id").first()
    assert change is not None and (change.source, change.actor, change.new_price) == (
        PriceSource.DASHBOARD, "user:manny", Decimal("7.35"))

    audited = await AuditEntry.filter(action=f"POST /prices/{product.id}/price", actor="user:manny").first()
    assert audited is not None and audited.status == 200

    # And the label, once it confirmed, is shown as displaying it.
    async def confirmed() -> bool:
        row = await ShelfLabel.get(device_id=label.device_id)
        return row.pending_sha256 is None and row.shown.get("0") == label.generator.screen.image.sha256  # type: ignore[attr-defined]

    await eventually(confirmed, WITHIN)
    await page.goto(f"{site.url}/labels?market=FT01")
    assert await page.get_attribute(f"tr[data-label='{label.device_id}']", "data-state") == "shown"


async def test_bind_preview_and_unbind_a_label_through_the_page(site, new_page, floor: Floor) -> None:
    label, product = floor.labels[1], floor.products["1002"]
    page = await new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await sign_in(page, site, "mia", next_path="/labels")
    await _bind_on_page(page, site, label.device_id, product)
    assert label.device_id in await page.inner_text("#flash [data-message]")
    await eventually(_true(lambda: floor.shown_price(label) == Decimal("4.50")), WITHIN)

    # What the label shows, as the platform renders it, page by page.
    row = page.locator(f"tr[data-label='{label.device_id}']")
    preview = row.locator("img[data-preview]")
    await preview.wait_for()
    assert await preview.evaluate("img => img.decode().then(() => img.naturalWidth)") == 296
    await row.locator("select[data-preview-page]").select_option("3")
    await page.wait_for_function(
        "id => new URL(document.querySelector(`tr[data-label='${id}'] img[data-preview]`).src).searchParams.get('page')"
        " === '3'",
        arg=label.device_id)
    png = await page.request.get(f"{site.url}/labels/{label.device_id}/image.png?page=3")
    assert png.status == 200 and (await png.body()).startswith(b"\x89PNG")

    # Switch the page the label itself shows, and flash its LED (order picking): both reach the simulated label.
    await row.locator("details summary").click()
    await row.locator("select[name=show_page]").select_option("2")
    async with page.expect_response(lambda r: r.url.endswith(f"/labels/{label.device_id}/page")):
        await row.locator("button[data-action=show-page]").click()
    await page.wait_for_selector(f"tr[data-label='{label.device_id}'] details:not([open])")  # the table answered
    await eventually(_true(lambda: label.generator.screen.page == 2), WITHIN)  # type: ignore[attr-defined]
    row = page.locator(f"tr[data-label='{label.device_id}']")
    await row.locator("details summary").click()
    await row.locator("select[name=colour]").select_option("blue")
    await row.locator("button[data-action=flash]").click()
    await eventually(_true(lambda: label.generator.screen.led_on(datetime.now(UTC)) == "blue"), WITHIN)  # type: ignore[attr-defined]

    await row.locator("button[data-action=unbind]").click()
    await page.wait_for_selector(f"tr[data-label='{label.device_id}'][data-state='unbound']")
    assert (await ShelfLabel.get(device_id=label.device_id)).product_id is None  # type: ignore[attr-defined]

    async def listed(bound: str) -> set[str]:
        await page.goto(f"{site.url}/labels?market=FT01&bound={bound}")
        return set(await page.eval_on_selector_all("tr[data-label]", "rows => rows.map(r => r.dataset.label)"))

    bound_ids = {d.device_id for d in floor.labels if (await ShelfLabel.get(device_id=d.device_id)).product_id}  # type: ignore[attr-defined]
    assert label.device_id in await listed("no") and label.device_id not in await listed("yes")
    assert await listed("yes") == bound_ids


async def test_a_labels_led_flashes_from_its_device_page_through_its_base_station(site, new_page, floor: Floor) -> None:
    label = floor.labels[0]
    page = await new_page()
    await sign_in(page, site, "mia", next_path=f"/devices/{label.device_id}")
    offered = await page.eval_on_selector_all("button[data-command]", "els => els.map(e => e.dataset.command)")
    assert offered == ["flash_led"]  # a label has no downlink of its own: only what its base station relays
    await page.click("button[data-command=flash_led]")
    await page.wait_for_selector("[data-command-result=ok]")
    await eventually(_true(lambda: label.generator.screen.led_on(datetime.now(UTC)) == "green"), WITHIN)  # type: ignore[attr-defined]


async def test_products_are_found_by_name_or_code_and_by_stall_as_one_types(site, new_page, floor: Floor) -> None:
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/prices?market=FT01")

    async def codes() -> list[str]:
        return await page.eval_on_selector_all("#products tr[data-code]", "rows => rows.map(r => r.dataset.code)")

    assert await codes() == ["1001", "1002", "2001"]
    await page.fill("input[name=q]", "黄瓜")  # no submit: the table follows the typing
    await page.wait_for_function("() => document.querySelectorAll('#products tr[data-code]').length === 1")
    assert await codes() == ["1002"]
    await page.fill("input[name=q]", "")
    await page.wait_for_function("() => document.querySelectorAll('#products tr[data-code]').length === 3")
    await page.select_option("select[name=stall]", "B02")
    await page.wait_for_function("() => document.querySelectorAll('#products tr[data-code]').length === 1")
    assert await codes() == ["2001"]


async def test_a_bad_price_is_refused_with_a_clear_reason(site, new_page, floor: Floor) -> None:
    product = floor.products["1002"]
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/prices?market=FT01")
    for typed, reason in (("-1", "9999.99"), ("abc", "6.80"), ("12345", "9999.99")):
        row = page.locator(f"tr[data-product='{product.id}']")
        await row.locator("input[name=price]").fill(typed)
        async with page.expect_response(lambda r: r.url.endswith(f"/prices/{product.id}/price")) as answer:
            await row.locator("button[data-action=set-price]").click()
        assert (await answer.value).status == 422
        message = page.locator("#flash p.error[role=alert]")
        await message.wait_for()
        assert reason in await message.inner_text(), await message.inner_text()
    assert (await Product.get(id=product.id)).price == Decimal("4.50")
    assert await page.get_attribute(f"tr[data-product='{product.id}'] td[data-price]", "data-price") == "4.50"


async def test_a_promotion_is_scheduled_in_market_time_and_can_be_cancelled(site, new_page, floor: Floor) -> None:
    product = floor.products["2001"]
    page = await new_page()
    await sign_in(page, site, "mia", next_path="/prices?market=FT01&stall=B02")
    local = datetime.now(ZoneInfo("Asia/Shanghai")).replace(second=0, microsecond=0)  # the market's wall clock
    start, end = local + timedelta(hours=2), local + timedelta(hours=5)

    async def promote(begins: datetime, ends: datetime, price: str) -> Any:
        form = page.locator(f"tr[data-product='{product.id}'] form[data-form=promotion]")
        await page.locator(f"tr[data-product='{product.id}'] details summary").click()
        await form.locator("input[name=promo_price]").fill(price)
        await form.locator("input[name=promo_text]").fill("周末特价")
        await form.locator("input[name=start]").fill(begins.strftime("%Y-%m-%dT%H:%M"))
        await form.locator("input[name=end]").fill(ends.strftime("%Y-%m-%dT%H:%M"))
        async with page.expect_response(lambda r: r.url.endswith(f"/prices/{product.id}/promotion")) as answer:
            await form.locator("button[data-action=promote]").click()
        return await answer.value

    refused = await promote(end, start, "25.00")  # the end before the start
    assert refused.status == 422
    await page.locator("#flash p.error[role=alert]").wait_for()
    assert await ScheduledPrice.filter(product_id=product.id).count() == 0

    assert (await promote(start, end, "25.00")).status == 200
    items = await ScheduledPrice.filter(product_id=product.id).order_by("at")
    assert [(i.at, i.promo_price, i.promo_text) for i in items] == [
        (start, Decimal("25.00"), "周末特价"), (end, None, "")]  # back to the list price at the end
    assert all(i.price == Decimal("28.00") for i in items)
    await page.wait_for_selector(f"tr[data-product='{product.id}'] [data-schedule='{items[1].id}']")

    await page.locator(f"[data-schedule='{items[1].id}'] button[data-action=cancel]").click()
    await page.wait_for_selector(f"[data-schedule='{items[1].id}']", state="detached")
    assert (await ScheduledPrice.get(id=items[1].id)).state == ScheduleState.CANCELLED


async def test_people_change_prices_only_where_their_role_and_markets_allow(site, new_page, floor: Floor) -> None:
    other_market = floor.products["3001"]  # NS02: not one of manny's markets
    bound_before = (await ShelfLabel.get_or_none(device_id=floor.labels[0].device_id))
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/prices?market=NS02")
    assert "NS02" not in await page.inner_text("select[name=market]")
    assert await page.locator(f"tr[data-product='{other_market.id}']").count() == 0
    refused = await page.request.post(f"{site.url}/prices/{other_market.id}/price",
                                      form={"price": "1.00", "market": "NS02"})
    assert refused.status == 404
    assert (await page.request.get(f"{site.url}/prices/{other_market.id}/history")).status == 404

    # A (hardware) vendor account has no price or label pages at all, like /api/v1/retail.
    vendor = await new_page()
    await sign_in(vendor, site, "vera")
    assert await vendor.locator("nav.main-nav a[href='/prices']").count() == 0
    assert (await vendor.goto(f"{site.url}/prices")).status == 403
    assert (await vendor.goto(f"{site.url}/labels")).status == 403
    mine = floor.products["2001"]
    assert (await vendor.request.post(f"{site.url}/prices/{mine.id}/price", form={"price": "1.00"})).status == 403
    assert (await vendor.request.post(f"{site.url}/labels/{floor.labels[0].device_id}/unbind")).status == 403
    assert (await Product.get(id=other_market.id)).price == Decimal("5.20")
    assert (await Product.get(id=mine.id)).price == Decimal("28.00")
    bound_after = await ShelfLabel.get_or_none(device_id=floor.labels[0].device_id)
    assert (bound_after and bound_after.product_id) == (bound_before and bound_before.product_id)  # type: ignore[attr-defined]


async def test_the_days_sales_per_stall_show_abnormal_orders_and_the_metrology_list_the_scale(
    site, new_page, floor: Floor
) -> None:
    scale, now = floor.scale, datetime.now(UTC)
    sale = {"type": "transaction", "time": now.isoformat(), "market_code": "FT01", "stall_no": "A01",
            "scale_id": scale.device_id, "product_code": "1002", "product_name": "黄瓜", "weight_kg": 2.0,
            "unit_price": 4.5}
    scale.emit([Emission("event", {**sale, "order_no": "E2E-OK", "total": 9.0}),
                Emission("event", {**sale, "order_no": "E2E-BAD", "total": 19.0})])  # total ≠ weight × price
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/ledger?market=FT01&stall=A01")

    async def both_stored() -> bool:
        await page.reload()
        return await page.locator("tr[data-order^='E2E-']").count() == 2

    await eventually(both_stored, WITHIN)
    assert await page.get_attribute("tr[data-order='E2E-BAD']", "data-flags") == "total_mismatch"
    assert await page.get_attribute("tr[data-order='E2E-OK']", "data-flags") == ""
    assert await page.get_attribute("tr[data-stall='A01'] [data-flagged]", "data-flagged") == "1"
    await page.check("input[name=flagged]")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_selector("tr[data-order='E2E-BAD']")
    assert await page.locator("tr[data-order='E2E-OK']").count() == 0

    # The scale has no verification certificate on record: it is on the overdue list of its stall's holder.
    await page.click("nav.tabs a[data-tab=metrology]")
    overdue = page.locator(f"section[data-due=overdue] tr[data-scale='{scale.device_id}']")
    await overdue.wait_for()
    assert "王记蔬菜" in await page.inner_text("section[data-due=overdue]")


async def test_the_metrology_list_downloads_as_csv_within_the_managers_markets(site, new_page, floor: Floor) -> None:
    import csv
    import io

    page = await new_page(accept_downloads=True)
    await sign_in(page, site, "manny", next_path="/ledger?view=metrology&market=FT01")
    async with page.expect_download() as info:
        await page.click("a[data-download=metrology]")
    download = await info.value
    assert download.suggested_filename.startswith("FT01-") and download.suggested_filename.endswith("-metrology.csv")
    text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    mine = next(r for r in rows if r["device_id"] == floor.scale.device_id)
    assert (mine["status"], mine["owner"], mine["stall_no"]) == ("overdue", "王记蔬菜", "A01")  # no certificate yet
    assert {r["market"] for r in rows} == {"FT01"}
    assert (await page.request.get(f"{site.url}/ledger/NS02/metrology.csv")).status == 404  # not in scope
    assert (await page.request.get(f"{site.url}/ledger/FT01/metrology.csv?within_days=400")).status == 422
    await page.emulate_media(media="print")  # printable: the page without navigation or the download link
    assert not await page.locator("header.top").is_visible()
    assert not await page.locator("a[data-download=metrology]").is_visible()


async def test_without_the_retail_service_the_pages_say_so_and_changes_answer_503(site, new_page, floor: Floor) -> None:
    product = await Product.get(id=floor.products["1001"].id)
    service = site.platform.services.pop("retail")
    try:
        page = await new_page()
        await sign_in(page, site, "mia", next_path="/prices?market=FT01")
        assert await page.get_attribute("[data-not-running]", "data-not-running") == "retail"
        refused = await page.request.post(f"{site.url}/prices/{product.id}/price", form={"price": "1.00"})
        assert refused.status == 503
        await page.goto(f"{site.url}/labels?market=FT01")
        assert await page.get_attribute("[data-not-running]", "data-not-running") == "retail"
        image = await page.request.get(f"{site.url}/labels/{floor.labels[0].device_id}/image.png")
        assert image.status == 503
        await page.goto(f"{site.url}/ledger?market=FT01")
        assert await page.get_attribute("[data-not-running]", "data-not-running") == "retail"
    finally:
        site.platform.services["retail"] = service
    assert (await Product.get(id=product.id)).price == product.price
