"""Shelf labels end to end through base stations: binding, prices on the pixels, diffs, timed promotions on an
offline label, roaming, LED flash."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from decimal import Decimal

from retail.esl_codec import frame_info
from retail.labels import PENDING_FIELDS, save_all
from retail.models import PriceChange, PriceSource, ShelfLabel
from retail.render import LabelSpec, price_box, read_price
from tests.integration.retail.conftest import MARKET, Retail

SPEC = LabelSpec(296, 128, "bwr")


async def _product(retail: Retail, code: str, price: str = "6.80", stall: str = "A03"):
    return await retail.service.prices.create_product(
        MARKET, {"code": code, "name": "西红柿", "price": Decimal(price), "origin": "山东寿光", "stall_no": stall},
        actor="user:test", source=PriceSource.API,
    )


async def _label_on_station(retail: Retail, label_id: str, station: str):
    sim = retail.floor.add_label(label_id, station)
    await retail.floor.uplink(station, "event", {"type": "label_joined", "label_id": label_id, "rssi_dbm": -58})
    return sim


def _relayed(retail: Retail, label_id: str) -> list[tuple[str, dict]]:
    """(base station, label command) of every command relayed to a label, oldest first."""
    return [(station, c["payload"]) for station, c in retail.floor.sent
            if c["command"] == "relay" and c["label_id"] == label_id]


def _shown_price(sim) -> Decimal | None:
    assert sim.screen.image is not None, "the label shows nothing"
    return read_price(sim.screen.image, price_box(SPEC))


async def test_bound_label_shows_the_rendered_new_price(retail: Retail) -> None:
    product = await _product(retail, "1001")
    sim = await _label_on_station(retail, "tv-EL0000", "tv-BS00")
    await retail.service.labels.bind("tv-EL0000", product, actor="user:test")
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("6.80")

    await retail.service.prices.update(product, {"price": Decimal("7.20")}, "user:test", PriceSource.DASHBOARD)
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("7.20")
    row = await ShelfLabel.get(device_id="tv-EL0000")
    assert row.pending_sha256 is None and row.shown["0"] == sim.screen.image.sha256  # the label confirmed it
    last_frame = base64.b64decode(_relayed(retail, "tv-EL0000")[-1][1]["frame"])
    assert frame_info(last_frame).diff and len(last_frame) < 400  # a price change travels as a small diff


async def test_price_history_records_who_when_and_source(retail: Retail) -> None:
    product = await _product(retail, "1002")
    await retail.service.prices.update(product, {"price": Decimal("5.00")}, "user:alice", PriceSource.DASHBOARD)
    history = await retail.service.prices.history(product)
    assert [(h.source, h.actor, h.old_price, h.new_price) for h in history] == [
        (PriceSource.DASHBOARD, "user:alice", Decimal("6.80"), Decimal("5.00")),
        (PriceSource.API, "user:test", None, Decimal("6.80")),
    ]
    assert history[0].at == retail.clock()


async def test_a_scan_binds_the_label_to_the_scanned_product(retail: Retail) -> None:
    product = await _product(retail, "1003", price="3.30")
    sim = await _label_on_station(retail, "tv-EL0001", "tv-BS00")
    await retail.floor.uplink("tv-EL0001", "event", {"type": "scanned", "product_code": "1003"})
    await retail.floor.deliver()
    assert (await ShelfLabel.get(device_id="tv-EL0001")).product_id == product.id
    assert _shown_price(sim) == Decimal("3.30")


async def test_a_scan_of_an_unknown_code_binds_nothing_and_is_counted(retail: Retail) -> None:
    await _label_on_station(retail, "tv-EL0002", "tv-BS00")
    await retail.floor.uplink("tv-EL0002", "event", {"type": "scanned", "product_code": "NOPE"})
    assert (await ShelfLabel.get(device_id="tv-EL0002")).product_id is None
    assert retail.service.uplinks.stats.ignored["esl.event.scanned"] == 1


async def test_a_handheld_scan_reported_by_the_base_station_binds_the_label(retail: Retail) -> None:
    product = await _product(retail, "1011", price="2.20")
    sim = await _label_on_station(retail, "tv-EL0009", "tv-BS01")
    await retail.floor.uplink("tv-BS01", "event", {"type": "label_scanned", "label_id": "tv-EL0009",
                                                   "product_code": "1011"})
    await retail.floor.deliver()
    row = await ShelfLabel.get(device_id="tv-EL0009")
    assert (row.product_id, row.bound_by) == (product.id, "scan:tv-BS01")
    assert _shown_price(sim) == Decimal("2.20")


async def test_a_base_station_scan_of_a_device_that_is_no_label_binds_nothing_and_is_counted(retail: Retail) -> None:
    await _product(retail, "1012")
    ignored = retail.service.uplinks.stats.ignored["esl_base_station.event.label_scanned"]
    for label_id in ("tv-SC00", "tv-NOPE"):  # a scale, and a device that does not exist
        await retail.floor.uplink("tv-BS01", "event", {"type": "label_scanned", "label_id": label_id,
                                                       "product_code": "1012"})
    assert retail.service.uplinks.stats.ignored["esl_base_station.event.label_scanned"] == ignored + 2
    assert not await ShelfLabel.filter(device_id__in=["tv-SC00", "tv-NOPE"]).exists()


async def test_timed_promotion_switches_on_time_while_the_label_is_offline(retail: Retail) -> None:
    product = await _product(retail, "1004")
    sim = await _label_on_station(retail, "tv-EL0003", "tv-BS00")
    await retail.service.labels.bind("tv-EL0003", product, actor="user:test")
    await retail.floor.deliver()
    at = retail.clock() + timedelta(hours=3)
    await retail.service.prices.schedule(product, at, Decimal("6.80"), Decimal("4.99"), "限时特价", "user:test")
    await retail.floor.deliver()  # the timed frame is downloaded ahead, while the label is in range
    sim.online = False  # from now on the label hears nothing: it must switch on its own clock

    retail.clock.now_value = at - timedelta(seconds=1)
    await retail.floor.tick_labels()
    assert _shown_price(sim) == Decimal("6.80")
    retail.clock.now_value = at
    await retail.floor.tick_labels()
    assert _shown_price(sim) == Decimal("4.99")
    switched_at = sim.screen.shown_log[-1][0]
    assert abs((switched_at - at).total_seconds()) <= 1.0

    applied = await retail.service.prices.apply_due()
    assert [a.id for a in applied] and (await product.refresh_from_db() or product).promo_price == Decimal("4.99")
    last = (await retail.service.prices.history(product))[0]
    assert last.source == PriceSource.SCHEDULE and last.at == at


async def test_a_label_that_moved_base_station_gets_the_next_update_through_the_new_one(retail: Retail) -> None:
    product = await _product(retail, "1005")
    sim = await _label_on_station(retail, "tv-EL0004", "tv-BS00")
    await retail.service.labels.bind("tv-EL0004", product, actor="user:test")
    await retail.floor.deliver()
    sim.station = "tv-BS01"  # carried to another aisle: BS00 no longer reaches it

    await retail.service.prices.update(product, {"price": Decimal("9.10")}, "user:test", PriceSource.API)
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("6.80") and retail.floor.lost[-1][0] == "tv-BS00"

    await retail.floor.uplink("tv-BS01", "event", {"type": "label_joined", "label_id": "tv-EL0004", "rssi_dbm": -61})
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("9.10")
    assert _relayed(retail, "tv-EL0004")[-1][0] == "tv-BS01"


async def test_a_label_that_roams_while_its_price_change_is_being_written_gets_it_through_the_new_station(
    retail: Retail,
) -> None:
    """The new station's report arrives after a price change read the label (old station) and before it saved the
    label's pending update: the change's frame is lost on the old station, and the re-route must still send it."""
    labels = retail.service.labels
    product = await _product(retail, "1090")
    sim = await _label_on_station(retail, "tv-EL0019", "tv-BS00")
    await labels.bind("tv-EL0019", product, actor="user:test")
    await retail.floor.deliver()
    sim.station = "tv-BS01"
    product.price = Decimal("8.40")
    await product.save(update_fields=["price"])

    async with labels.write_lock:  # what a price change does: read and render, then save the pending state
        commands = await labels.prepare_products([product])
        joined = asyncio.create_task(retail.floor.uplink(
            "tv-BS01", "event", {"type": "label_joined", "label_id": "tv-EL0019", "rssi_dbm": -60}))
        async with asyncio.timeout(30):  # the re-route waits for the lock (or, wrongly, finishes without it)
            while True:
                if joined.done() or labels.write_lock._waiters:
                    break
                await asyncio.sleep(0.01)
        await save_all([label for label, _ in commands], PENDING_FIELDS)
    await labels.relay_all(commands)  # through the old station: lost
    await joined
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("8.40")
    assert _relayed(retail, "tv-EL0019")[-1][0] == "tv-BS01"


async def test_an_unconfirmed_update_is_sent_again_through_the_station_the_label_reports(retail: Retail) -> None:
    product = await _product(retail, "1006")
    sim = await _label_on_station(retail, "tv-EL0005", "tv-BS00")
    await retail.service.labels.bind("tv-EL0005", product, actor="user:test")
    sim.station = "tv-BS02"
    await retail.floor.deliver()  # lost: the label already moved
    await retail.floor.uplink("tv-EL0005", "telemetry", {"battery_pct": 88, "rssi_dbm": -70,
                                                         "base_station_id": "tv-BS02"})
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("6.80")
    assert (await ShelfLabel.get(device_id="tv-EL0005")).battery_pct == 88


async def test_led_flash_reaches_the_label(retail: Retail) -> None:
    product = await _product(retail, "1007")
    sim = await _label_on_station(retail, "tv-EL0006", "tv-BS00")
    await retail.service.labels.bind("tv-EL0006", product, actor="user:test")
    await retail.service.labels.flash("tv-EL0006", "red", 5)
    await retail.floor.deliver()
    assert sim.screen.led_on(retail.clock()) == "red"
    assert sim.screen.led_on(retail.clock() + timedelta(seconds=6)) is None


async def test_every_page_can_be_shown_and_switched(retail: Retail) -> None:
    product = await _product(retail, "1008")
    sim = await _label_on_station(retail, "tv-EL0007", "tv-BS00")
    await retail.service.labels.bind("tv-EL0007", product, actor="user:test")
    for page in range(8):
        await retail.service.labels.switch_page("tv-EL0007", page)
        await retail.floor.deliver()
        assert sim.screen.page == page
    assert len(sim.screen.pages) == 8 and len({img.sha256 for img in sim.screen.pages.values()}) == 8
    await retail.service.labels.switch_page("tv-EL0007", 0)  # already on the label: only show_page goes out
    assert _relayed(retail, "tv-EL0007")[-1][1] == {"command": "show_page", "page": 0}


async def test_binding_a_device_that_is_not_a_label_is_refused(retail: Retail) -> None:
    import pytest

    from fleet.errors import InvalidRequest

    product = await _product(retail, "1009")
    with pytest.raises(InvalidRequest, match="not a shelf label"):
        await retail.service.labels.bind("tv-SC00", product, actor="user:test")
    assert await PriceChange.filter(product=product).count() == 1


async def test_a_label_that_lost_its_image_is_sent_a_full_frame(retail: Retail) -> None:
    product = await _product(retail, "1010")
    sim = await _label_on_station(retail, "tv-EL0008", "tv-BS00")
    await retail.service.labels.bind("tv-EL0008", product, actor="user:test")
    await retail.floor.deliver()
    sim.screen.pages.clear()  # battery swapped: the label's memory is empty, the platform does not know yet
    await retail.service.prices.update(product, {"price": Decimal("8.80")}, "user:test", PriceSource.API)
    await retail.floor.deliver()  # the diff fails on the label, it reports refresh_failed, a full frame follows
    assert _shown_price(sim) == Decimal("8.80")
    frames = [base64.b64decode(c["frame"]) for _, c in _relayed(retail, "tv-EL0008") if c.get("frame")]
    assert [frame_info(f).diff for f in frames[-2:]] == [True, False]


async def test_a_price_list_updates_every_bound_label_and_records_each_change(retail: Retail) -> None:
    products, sims = [], []
    for n in range(3):
        products.append(await _product(retail, f"11{n:02d}", price="2.00"))
        sims.append(await _label_on_station(retail, f"tv-EL001{n + 3}", "tv-BS01"))
        await retail.service.labels.bind(f"tv-EL001{n + 3}", products[-1], actor="user:test")
    await retail.floor.deliver()
    changes = [(p, {"price": Decimal(f"{3 + n}.50")}) for n, p in enumerate(products)]
    await retail.service.prices.update_many(changes, "user:list", PriceSource.API)
    await retail.floor.deliver()
    assert [_shown_price(s) for s in sims] == [Decimal("3.50"), Decimal("4.50"), Decimal("5.50")]
    for product in products:
        assert (await retail.service.prices.history(product))[0].actor == "user:list"
    assert await ShelfLabel.filter(device_id__in=[s.device_id for s in sims], pending_sha256__isnull=False).count() == 0


async def test_confirmations_arriving_in_a_burst_are_all_recorded(retail: Retail) -> None:
    from fleet.envelope import Envelope

    sims = []
    for n in range(2):
        product = await _product(retail, f"12{n:02d}")
        sims.append(await _label_on_station(retail, f"tv-EL001{n + 6}", "tv-BS02"))
        sims[-1].online = False  # the platform's commands reach them, their answers come later, together
        await retail.service.labels.bind(sims[-1].device_id, product, actor="user:test")
    for sim in sims:
        sim.online = True
        _, command = _relayed(retail, sim.device_id)[-1]
        sim.screen.apply(command, retail.clock())
    burst = [Envelope(device_id=s.device_id, kind="esl", channel="event", ts=retail.clock(), seq=n,
                      payload={"type": "shown", "image_sha256": s.screen.image.sha256, "page": 0})
             for n, s in enumerate(sims)]
    await retail.service.handle_many(burst)
    rows = await ShelfLabel.filter(device_id__in=[s.device_id for s in sims])
    assert [r.pending_sha256 for r in rows] == [None, None] and all(r.shown["0"] for r in rows)


async def test_a_label_bound_or_moved_after_a_promotion_was_scheduled_still_switches_on_time(retail: Retail) -> None:
    product = await _product(retail, "1300")
    at = retail.clock() + timedelta(hours=1)
    await retail.service.prices.schedule(product, at, Decimal("6.80"), Decimal("3.99"), "", "user:test")
    sim = await _label_on_station(retail, "tv-EL0018", "tv-BS00")
    await retail.service.labels.bind("tv-EL0018", product, actor="user:test")
    sim.station = "tv-BS01"  # moves before anything reached it: the old station's frames are lost
    await retail.floor.deliver()
    assert sim.screen.pending == []
    await retail.floor.uplink("tv-BS01", "event", {"type": "label_joined", "label_id": "tv-EL0018", "rssi_dbm": -60})
    await retail.floor.deliver()
    assert _shown_price(sim) == Decimal("6.80") and [p.at for p in sim.screen.pending] == [at]

    swept = len(retail.floor.sent)
    await retail.service.prices.send_upcoming()  # the minutely sweep: nothing is missing, nothing is sent
    assert len(retail.floor.sent) == swept
    retail.clock.now_value = at
    sim.online = False
    await retail.floor.tick_labels()
    assert _shown_price(sim) == Decimal("3.99")
