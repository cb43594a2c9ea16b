"""Single price changes and label confirmations arriving together are written together (group commit), while
each caller still gets its own result or its own error, every change lands in the price history once, in
arrival order, and every label ends up showing its product's last price."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from fleet.envelope import Envelope
from fleet.errors import InvalidRequest, NotFound
from retail.models import PriceChange, PriceSource, Product, ShelfLabel
from retail.render import LabelSpec, price_box, read_price
from tests.integration.retail.conftest import MARKET, Retail

SPEC = LabelSpec(296, 128, "bwr")


async def _products_with_labels(retail: Retail, prefix: str, count: int, first_label: int = 0):
    products, sims = [], []
    for n in range(count):
        product = await retail.service.prices.create_product(
            MARKET, {"code": f"{prefix}{n:02d}", "name": "黄瓜", "price": Decimal("3.00"), "stall_no": "A03"},
            actor="user:setup", source=PriceSource.API,
        )
        label_id, station = f"tv-EL{first_label + n:04d}", f"tv-BS0{n % 3}"
        sims.append(retail.floor.add_label(label_id, station))
        await retail.floor.uplink(station, "event", {"type": "label_joined", "label_id": label_id, "rssi_dbm": -60})
        await retail.service.labels.bind(label_id, product, actor="user:setup")
        products.append(product)
    await retail.floor.deliver()
    return products, sims


def _shown_price(sim) -> Decimal | None:
    assert sim.screen.image is not None, f"label {sim.device_id} shows nothing"
    return read_price(sim.screen.image, price_box(SPEC))


async def test_concurrent_single_changes_share_writes_and_each_is_in_the_history_once(retail: Retail) -> None:
    products, sims = await _products_with_labels(retail, "GC", 6)
    rounds = 5
    # Each product is changed by several people at once; calls are started in this order (their arrival order).
    calls = [(products[p], Decimal(f"{10 + p}.{r}0"), f"user:p{p}r{r}")
             for r in range(rounds) for p in range(len(products))]
    batches_before = retail.service.prices.group_stats.batches

    # A fresh Product row per caller, as the API reads one per request: stale copies must not matter.
    copies = [await Product.get(id=product.id) for product, _, _ in calls]
    results = await asyncio.gather(*(
        retail.service.prices.update(copy, {"price": price}, actor, PriceSource.API)
        for copy, (_, price, actor) in zip(copies, calls, strict=True)
    ))

    batches = retail.service.prices.group_stats.batches - batches_before
    assert batches < len(calls), "concurrent single changes were written one by one"
    for result, (_, price, _) in zip(results, calls, strict=True):
        assert result.price == price  # each caller sees the product as its own change left it
    for p, product in enumerate(products):
        history = await PriceChange.filter(product_id=product.id, source=PriceSource.API).order_by("id")
        changes = [h for h in history if h.actor != "user:setup"]
        assert [(h.actor, h.new_price) for h in changes] == [
            (f"user:p{p}r{r}", Decimal(f"{10 + p}.{r}0")) for r in range(rounds)
        ]  # every change once, in arrival order
        assert [h.old_price for h in changes] == [Decimal("3.00")] + [h.new_price for h in changes[:-1]]
        assert all(h.at == retail.clock() for h in changes)
        final = Decimal(f"{10 + p}.{rounds - 1}0")
        assert (await Product.get(id=product.id)).price == final  # the last change wins

    await retail.floor.deliver()  # through the base stations to the simulated labels and their confirmations
    for p, sim in enumerate(sims):
        assert _shown_price(sim) == Decimal(f"{10 + p}.{rounds - 1}0")
        row = await ShelfLabel.get(device_id=sim.device_id)
        assert row.pending_sha256 is None and row.shown["0"] == sim.screen.image.sha256


async def test_a_bad_price_in_the_middle_of_a_batch_fails_alone(retail: Retail) -> None:
    products, sims = await _products_with_labels(retail, "BD", 5, first_label=6)
    gone = await retail.service.prices.create_product(
        MARKET, {"code": "BD-GONE", "name": "旧货", "price": Decimal("1.00")}, actor="user:setup",
        source=PriceSource.API)
    stale = await Product.get(id=gone.id)
    await gone.delete()
    batches_before = retail.service.prices.group_stats.batches

    changes = [Decimal("4.10"), Decimal("-1"), Decimal("4.30"), Decimal("12.345"), Decimal("4.50")]
    outcomes = await asyncio.gather(
        *(retail.service.prices.update(product, {"price": price}, f"user:{n}", PriceSource.DASHBOARD)
          for n, (product, price) in enumerate(zip(products, changes, strict=True))),
        retail.service.prices.update(stale, {"price": Decimal("2.00")}, "user:late", PriceSource.DASHBOARD),
        return_exceptions=True,
    )

    assert retail.service.prices.group_stats.batches - batches_before == 1  # all of them arrived together
    assert isinstance(outcomes[1], InvalidRequest) and str(outcomes[1]).startswith("price: -1 ")
    assert isinstance(outcomes[3], InvalidRequest) and "at most two decimals" in str(outcomes[3])
    assert isinstance(outcomes[5], NotFound) and str(gone.id) in str(outcomes[5])
    for n in (0, 2, 4):
        assert isinstance(outcomes[n], Product) and outcomes[n].price == changes[n]
    await retail.floor.deliver()
    for n, (product, sim) in enumerate(zip(products, sims, strict=True)):
        expected = changes[n] if n in (0, 2, 4) else Decimal("3.00")  # the refused ones keep their price
        assert (await Product.get(id=product.id)).price == expected
        assert _shown_price(sim) == expected
        accepted = await PriceChange.filter(product_id=product.id, source=PriceSource.DASHBOARD).count()
        assert accepted == (1 if n in (0, 2, 4) else 0)  # a refused change leaves no history


async def test_concurrent_label_confirmations_each_get_their_own_answer(retail: Retail) -> None:
    products, sims = await _products_with_labels(retail, "CF", 4, first_label=12)
    retail.floor.queue.clear()
    for n, product in enumerate(products):  # four labels with an update out, not yet delivered
        await retail.service.prices.update(product, {"price": Decimal(f"8.{n}0")}, "user:c", PriceSource.API)
    pending = {row.device_id: row.pending_sha256
               for row in await ShelfLabel.filter(device_id__in=[s.device_id for s in sims])}
    assert all(pending.values())
    batches_before = retail.service.labels._shown.stats.batches

    answers = await asyncio.gather(*(
        retail.service.labels.confirmed(sim.device_id, pending[sim.device_id] if n != 2 else "0" * 64, 0)
        for n, sim in enumerate(sims)
    ), retail.service.labels.confirmed("tv-NOT-A-LABEL", "1" * 64, 0))

    assert answers == [True, True, False, True, False]  # a confirmation of another image does not clear it
    assert retail.service.labels._shown.stats.batches - batches_before == 1
    rows = {row.device_id: row for row in await ShelfLabel.filter(device_id__in=list(pending))}
    assert rows[sims[2].device_id].pending_sha256 == pending[sims[2].device_id]  # still waiting: resent later
    assert all(rows[s.device_id].pending_sha256 is None for n, s in enumerate(sims) if n != 2)


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("10000"), "abc", 3.5])
async def test_a_single_change_with_a_price_no_label_can_show_is_refused_clearly(retail: Retail, bad) -> None:
    product = await retail.service.prices.create_product(
        MARKET, {"code": f"ONE-{bad}", "name": "葱", "price": Decimal("2.00")}, actor="user:setup",
        source=PriceSource.API)
    with pytest.raises(InvalidRequest, match=r"^price: "):
        await retail.service.prices.update(product, {"price": bad}, "user:x", PriceSource.API)
    assert (await Product.get(id=product.id)).price == Decimal("2.00")
    assert await PriceChange.filter(product_id=product.id).count() == 1  # only its creation


async def test_prices_typed_on_scales_together_are_judged_in_order_and_written_together(retail: Retail) -> None:
    (first, second), sims = await _products_with_labels(retail, "SC", 2, first_label=16)
    await retail.floor.deliver()  # the stall's scales hold the newest table
    batches_before = retail.service.prices.group_stats.batches
    ignored_before = retail.service.uplinks.stats.ignored["scale.event.price_set"]

    def typed(scale: str, code: str, price: str, seq: int) -> Envelope:
        return Envelope(device_id=scale, kind="scale", channel="event", ts=retail.clock(), seq=seq,
                        received_at=retail.clock(),
                        payload={"type": "price_set", "product_code": code, "unit_price": price})

    await retail.service.handle_many([  # one burst from the bus, as the service's consumer hands it over
        typed("tv-SC00", first.code, "21.00", 1),
        typed("tv-SC01", second.code, "22.00", 2),
        typed("tv-SC01", first.code, "23.00", 3),  # SC01 had not seen SC00's change just before: stale
        typed("tv-SC02", "NO-SUCH-CODE", "1.00", 4),
    ])

    assert retail.service.prices.group_stats.batches - batches_before == 1
    assert retail.service.uplinks.stats.ignored["scale.event.price_set"] - ignored_before == 1  # the unknown code
    history = [(h.actor, h.new_price, h.accepted) for h in await PriceChange.filter(
        product_id=first.id, source=PriceSource.SCALE).order_by("id")]
    assert history == [("tv-SC00", Decimal("21.00"), True), ("tv-SC01", Decimal("23.00"), False)]
    assert [(h.actor, h.new_price) for h in await PriceChange.filter(product_id=second.id, source=PriceSource.SCALE)
            ] == [("tv-SC01", Decimal("22.00"))]
    await retail.floor.deliver()
    assert [_shown_price(sim) for sim in sims] == [Decimal("21.00"), Decimal("22.00")]
    for scale in ("tv-SC00", "tv-SC01", "tv-SC02"):  # every scale of the stall ends with the prices that stand
        assert retail.floor.scales[scale].plu[first.code] == "21.00"
        assert retail.floor.scales[scale].plu[second.code] == "22.00"
