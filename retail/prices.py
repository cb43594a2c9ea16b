"""Products and prices: every change recorded with who, when and from where; labels and scales follow.

A price change made on the platform bumps the stall's PLU table version (retail/sync.py), re-renders every
label bound to the product, and sends the table to the stall's scales. A price typed on a scale goes through
the conflict rule first. Timed changes (promotions) are sent to the labels ahead of time as timed frames and
applied on the platform when their moment comes (`apply_due`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tortoise.functions import Max
from tortoise.transactions import in_transaction

from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.models import Device, Market, Stall
from retail.commands import Clock, CommandSender
from retail.group_commit import GroupCommit, GroupCommitStats
from retail.labels import PENDING_FIELDS, LabelDispatcher, content_for
from retail.models import PriceChange, PriceSource, Product, ScalePlu, ScheduledPrice, ScheduleState, ShelfLabel
from retail.sync import decide_scale_change

__all__ = ["PriceBook"]

log = logging.getLogger(__name__)

SCALES_TTL_S = 10.0
GROUP_MAX = 500  # changes per group commit, as many as a price list
PRODUCT_FIELDS = ("name", "category", "origin", "unit", "grade", "promo_text", "trace_url")
CHANGE_FIELDS = (*PRODUCT_FIELDS, "price", "promo_price")
MAX_PRICE = Decimal("10000")  # what a label can show: 0.00 to 9999.99 (retail/schemas.py `Price`)


@dataclasses.dataclass
class _Change:
    """One `PriceBook.update` call waiting for its batch."""

    product: Product
    changes: dict[str, Any]
    actor: str
    source: PriceSource
    at: datetime
    scale: str | None = None  # a price typed on this scale: the conflict rule decides (retail/sync.py)
    scale_holds: int = 0  # the PLU table version that scale held


def check_changes(changes: dict[str, Any]) -> None:
    """Refuse what a label or scale cannot show, naming the field (the API checks the same with its schema; this
    guards every other caller, and keeps one bad change from spoiling the batch it arrived in)."""
    unknown = set(changes) - set(CHANGE_FIELDS)
    if unknown:
        raise InvalidRequest(f"{sorted(unknown)[0]}: not a field of a product that can be changed")
    for key in ("price", "promo_price"):
        if key not in changes or (key == "promo_price" and changes[key] is None):
            continue
        value = changes[key]
        if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
            raise InvalidRequest(f"{key}: {value!r} is not a price")
        try:
            price = Decimal(value)
        except ArithmeticError:
            raise InvalidRequest(f"{key}: {value!r} is not a price") from None
        if not price.is_finite() or not 0 <= price < MAX_PRICE or price != price.quantize(Decimal("0.01")):
            raise InvalidRequest(f"{key}: {value} is not a price a label can show (0.00 to 9999.99, at most two "
                                 "decimals)")
        changes[key] = price.quantize(Decimal("0.01"))


class PriceBook:
    def __init__(self, labels: LabelDispatcher, sender: CommandSender, clock: Clock,
                 *, schedule_lead: timedelta = timedelta(days=2), group_window_s: float = 0.002,
                 group_max: int = GROUP_MAX) -> None:
        self.labels = labels
        self.sender = sender
        self.clock = clock
        self.schedule_lead = schedule_lead  # timed changes further ahead are sent to labels later
        self._scales: dict[int, tuple[float, list[Device]]] = {}
        # (timed change, label) pairs whose frame went out: the minutely sweep sends only what is missing. Kept in
        # memory: after a restart each label gets its frames once more, which the label takes as a replacement.
        self._sent_ahead: set[tuple[int, str]] = set()
        labels.on_moved = self.timed_frames_for
        self._changes: GroupCommit[_Change, Product] = GroupCommit(
            self._commit_changes, window_s=group_window_s, max_batch=group_max, name="retail price changes")

    @property
    def group_stats(self) -> GroupCommitStats:
        return self._changes.stats

    async def aclose(self) -> None:
        await self._changes.aclose()

    # ---------------------------------------------------------------- products

    async def create_product(self, market: str, data: dict[str, Any], actor: str, source: PriceSource) -> Product:
        market_row = await Market.get_or_none(code=market)
        if market_row is None:
            raise NotFound(f"no market {market!r}")
        stall = await self._stall(market, data.pop("stall_no", None))
        if await Product.exists(market_id=market, stall=stall, code=data["code"]):
            where = f"stall {stall.number}" if stall else "the market"
            raise Conflict(f"product {data['code']!r} already exists in {market} {where}")
        async with in_transaction():
            product = await Product.create(market=market_row, stall=stall, plu_version=await self._next_version(stall),
                                           **data)
            await PriceChange.create(product=product, source=source, actor=actor, old_price=None,
                                     new_price=product.price, new_promo_price=product.promo_price, at=self.clock())
        await self._push_scales(product)
        return product

    async def get(self, product_id: int, markets: frozenset[str] | None = None) -> Product:
        product = await Product.get_or_none(id=product_id)
        if product is None or (markets is not None and product.market_id not in markets):  # type: ignore[attr-defined]
            raise NotFound(f"no product {product_id}")
        return product

    async def find(self, market: str, code: str, stall_id: int | None = None) -> Product:
        """The product with PLU `code` in a market; the stall decides when several stalls use the code."""
        candidates = await Product.filter(market_id=market, code=code)
        if stall_id is not None:
            own = [p for p in candidates if p.stall_id == stall_id]  # type: ignore[attr-defined]
            candidates = own or candidates
        if not candidates:
            raise NotFound(f"no product {code!r} in market {market}")
        if len(candidates) > 1:
            raise Conflict(f"product code {code!r} is used by {len(candidates)} stalls in {market}; "
                           "bind through the API")
        return candidates[0]

    async def update(self, product: Product, changes: dict[str, Any], actor: str, source: PriceSource) -> Product:
        """Change a product; a new price or promotion is recorded in the history and shown on labels and scales.

        Concurrent calls are group-committed (`_commit_changes`): each caller gets its own product back, or its
        own error, as if it had been alone; `product` is updated in place as well."""
        return await self._changes.submit(_Change(product, dict(changes), actor, source, self.clock()))

    async def _commit_changes(self, batch: list[_Change]) -> list[Any]:
        """One batch of single changes (`update`, `price_from_scale`) in arrival order: the products read fresh in
        one query, each change checked and applied in turn (a later change of the same product builds on the
        earlier one, so the last one wins and the history keeps every step; a scale's change meets the conflict
        rule against what came before it), then one transaction for the products (one PLU table version per
        stall) and their history, then every bound label and the stalls' scales once, at their final state."""
        rows = {p.id: p for p in await Product.filter(id__in=list({c.product.id for c in batch}))}
        results: list[Any] = []
        history: list[PriceChange] = []
        touched: dict[int, Product] = {}
        bumped: set[int] = set()
        versions: dict[int | None, int] = {}  # the stalls' table version this batch writes
        scales_told: dict[str, int] = {}  # scale -> product whose table it is sent (a refused or accepted edit)
        for change in batch:
            row = rows.get(change.product.id)
            if row is None:
                results.append(NotFound(f"no product {change.product.id}"))
                continue
            try:
                check_changes(change.changes)
            except InvalidRequest as err:
                results.append(err)
                continue
            old_price, old_promo = row.price, row.promo_price
            note = ""
            if change.scale is not None:
                stall_id = row.stall_id  # type: ignore[attr-defined]
                if row.id in bumped and stall_id not in versions:
                    versions[stall_id] = await self._next_version_of(stall_id)
                decision = decide_scale_change(versions[stall_id] if row.id in bumped else row.plu_version,
                                               change.scale_holds)
                scales_told[change.scale] = row.id
                if not decision.accepted:
                    refused = PriceChange(product=row, source=PriceSource.SCALE, actor=change.scale,
                                          old_price=row.price, new_price=change.changes["price"], accepted=False,
                                          note=decision.reason[:300], at=change.at)
                    history.append(refused)
                    results.append(refused)
                    continue
                note = decision.reason
            for key in CHANGE_FIELDS:
                if key in change.changes:
                    setattr(row, key, change.changes[key])
            touched[row.id] = row
            entry = None
            if (row.price, row.promo_price) != (old_price, old_promo) or change.scale is not None:
                entry = PriceChange(product=row, source=change.source, actor=change.actor, old_price=old_price,
                                    new_price=row.price, old_promo_price=old_promo, new_promo_price=row.promo_price,
                                    note=note, at=change.at)
                history.append(entry)
                bumped.add(row.id)
            elif "name" in change.changes or "unit" in change.changes:
                bumped.add(row.id)  # what a scale shows changed
            for key in CHANGE_FIELDS:
                setattr(change.product, key, getattr(row, key))
            results.append(entry if change.scale is not None else change.product)
        if not touched and not history:
            return results
        now = self.clock()
        async with self.labels.write_lock:  # no confirmation may write these labels between read and write
            # Labels are rendered from the final state before the commit, so that one transaction holds the
            # products, their history and the labels' pending state; frames go out once it is committed.
            commands = await self.labels.prepare_products(list(touched.values()))
            async with in_transaction():  # raising in here writes nothing: GroupCommit then tries each alone
                for row in touched.values():
                    if row.id in bumped:
                        stall_id = row.stall_id  # type: ignore[attr-defined]
                        if stall_id not in versions:
                            versions[stall_id] = await self._next_version_of(stall_id)
                        row.plu_version = versions[stall_id]
                    row.updated_at = now
                    await row.save(update_fields=[*CHANGE_FIELDS, "plu_version", "updated_at"])
                if history:
                    await PriceChange.bulk_create(history, batch_size=500)
                for label, _ in commands:
                    await label.save(update_fields=PENDING_FIELDS)
        for change in batch:
            row = touched.get(change.product.id)
            if row is not None:
                change.product.plu_version, change.product.updated_at = row.plu_version, row.updated_at
        try:  # committed: a failure from here on is told to the callers, and nothing is written twice
            await self.labels.relay_all(commands)
            await self._push_batch(touched, scales_told, rows, batch)
        except Exception as err:
            log.exception("retail: %d price changes saved, but their labels or scales were not updated", len(batch))
            return [err if isinstance(result, Product | PriceChange) else result for result in results]
        return results

    async def _push_batch(self, touched: dict[int, Product], scales_told: dict[str, int], rows: dict[int, Product],
                          batch: list[_Change]) -> None:
        """Each touched stall's table to its scales once. A scale whose own edit was the only change of its stall
        in the batch is not sent it back (it holds it already); one whose edit was refused gets the table."""
        stalls: dict[int | None, Product] = {}
        editors: dict[int | None, set[str]] = {}
        for change in batch:
            row = touched.get(change.product.id)
            if row is None:
                continue
            stall_id = row.stall_id  # type: ignore[attr-defined]
            stalls.setdefault(stall_id, row)
            editors.setdefault(stall_id, set()).add(change.scale or "")
        for stall_id, row in stalls.items():
            who = editors[stall_id]  # scales that edited, "" for the platform
            await self._push_scales(row, skip=next(iter(who)) if len(who) == 1 and "" not in who else None)
        for scale, product_id in scales_told.items():
            stall_id = rows[product_id].stall_id  # type: ignore[attr-defined]
            if stall_id not in stalls:  # refused, nothing else in its stall changed: show it the price that stands
                await self._push_scales(rows[product_id], only=scale)

    async def update_many(self, items: list[tuple[Product, dict[str, Any]]], actor: str,
                          source: PriceSource) -> list[Product]:
        """Many price changes at once (a market's morning price list): one table version per stall, one write
        for the products and one for their history, then every bound label and the stalls' scales."""
        changed: list[Product] = []
        history: list[PriceChange] = []
        now = self.clock()
        for product, changes in items:
            old_price, old_promo = product.price, product.promo_price
            for key in (*PRODUCT_FIELDS, "price", "promo_price"):
                if key in changes:
                    setattr(product, key, changes[key])
            if (product.price, product.promo_price) != (old_price, old_promo):
                changed.append(product)
                history.append(PriceChange(product=product, source=source, actor=actor, old_price=old_price,
                                           new_price=product.price, old_promo_price=old_promo,
                                           new_promo_price=product.promo_price, at=now))
        versions: dict[int | None, int] = {}
        for product in changed:
            stall_id = product.stall_id  # type: ignore[attr-defined]
            if stall_id not in versions:
                versions[stall_id] = await self._next_version(await product.stall if stall_id else None)
            product.plu_version = versions[stall_id]
        for product, _ in items:
            product.updated_at = now
        async with in_transaction():
            for product, _ in items:
                await product.save(update_fields=[*PRODUCT_FIELDS, "price", "promo_price", "plu_version", "updated_at"])
            if history:
                await PriceChange.bulk_create(history, batch_size=500)
        await self.labels.show_products(changed)
        pushed: set[int] = set()
        for product in changed:
            if product.stall_id not in pushed:  # type: ignore[attr-defined]
                pushed.add(product.stall_id)  # type: ignore[attr-defined]
                await self._push_scales(product)
        return [p for p, _ in items]

    async def history(self, product: Product) -> list[PriceChange]:
        return await PriceChange.filter(product=product).order_by("-at", "-id")

    async def refresh_labels(self, product: Product) -> int:
        return await self.labels.show_products([product])

    # ---------------------------------------------------------------- the scale side (sync)

    async def price_from_scale(self, scale_id: str, code: str, unit_price: Decimal) -> PriceChange:
        """A price typed on a scale: applied, or refused as stale (retail/sync.py); recorded either way.
        Group-committed with other single changes; the conflict rule is applied in the batch, in arrival order."""
        return await self._changes.submit(await self.scale_change(scale_id, code, unit_price))

    async def scale_change(self, scale_id: str, code: str, unit_price: Decimal) -> _Change:
        """The change a scale asks for, looked up (its product, the table version it holds) but not written yet:
        `submit_changes` writes several of them in their order."""
        scale = await Device.get_or_none(id=scale_id)
        if scale is None or scale.market_id is None:  # type: ignore[attr-defined]
            raise InvalidRequest(f"scale {scale_id!r} is not placed in a market")
        product = await self.find(scale.market_id, code, scale.stall_id)  # type: ignore[attr-defined]
        plu = await ScalePlu.get_or_none(scale_id=scale_id)
        return _Change(product, {"price": unit_price}, scale_id, PriceSource.SCALE, self.clock(), scale=scale_id,
                       scale_holds=plu.held_version if plu else 0)

    async def submit_changes(self, changes: list[_Change]) -> list[Any]:
        """Write `changes` in their order, group-committed; one result or exception per change."""
        tasks = [asyncio.ensure_future(self._changes.submit(change)) for change in changes]  # queued in this order
        return await asyncio.gather(*tasks, return_exceptions=True)

    async def scale_holds(self, scale_id: str, version: int) -> None:
        plu, _ = await ScalePlu.get_or_create(scale_id=scale_id)
        if version != plu.held_version:
            plu.held_version = version
            await plu.save(update_fields=["held_version"])

    async def plu_table(self, stall_id: int | None, market: str) -> tuple[int, list[dict[str, Any]]]:
        products = await Product.filter(market_id=market, stall_id=stall_id).order_by("code")
        version = max((p.plu_version for p in products), default=0)
        entries = [{"product_code": p.code, "product_name": p.name, "unit_price": str(p.promo_price or p.price)}
                   for p in products]
        return version, entries

    async def _push_scales(self, product: Product, *, only: str | None = None, skip: str | None = None) -> None:
        if product.stall_id is None or getattr(self.sender, "deferred", False):  # type: ignore[attr-defined]
            return  # no downlink here: the scales stay marked behind, and `sync_scales` sends where ingest runs
        scales = await self._scales_of(product.stall_id)  # type: ignore[attr-defined]
        if not scales:
            return
        version, entries = await self.plu_table(product.stall_id, product.market_id)  # type: ignore[attr-defined]
        for scale in scales:
            if (only and scale.id != only) or scale.id == skip:
                if scale.id == skip:
                    await self.scale_holds(scale.id, version)
                continue
            await self.sender.send(scale.id, scale.market_id,  # type: ignore[attr-defined]
                                   {"command": "set_plu", "version": version, "entries": entries})
            plu, _ = await ScalePlu.get_or_create(scale_id=scale.id)
            plu.sent_version, plu.sent_at = version, self.clock()
            await plu.save(update_fields=["sent_version", "sent_at"])

    async def _scales_of(self, stall_id: int) -> list[Device]:
        # Read on every price change; a scale placed in the stall is picked up within SCALES_TTL_S.
        hit = self._scales.get(stall_id)
        if hit is not None and time.monotonic() - hit[0] < SCALES_TTL_S:
            return hit[1]
        scales = await Device.filter(stall_id=stall_id, kind="scale", status="active")
        self._scales[stall_id] = (time.monotonic(), scales)
        return scales

    async def _next_version(self, stall: Stall | None) -> int:
        return await self._next_version_of(stall.id if stall is not None else None)

    async def _next_version_of(self, stall_id: int | None) -> int:
        row = await Product.filter(stall_id=stall_id).annotate(top=Max("plu_version")).first().values("top")
        return int((row or {}).get("top") or 0) + 1

    async def _stall(self, market: str, number: str | None) -> Stall | None:
        if not number:
            return None
        stall = await Stall.get_or_none(market_id=market, number=number)
        if stall is None:
            raise NotFound(f"no stall {number!r} in market {market}")
        return stall

    # ---------------------------------------------------------------- timed changes

    async def schedule(self, product: Product, at: datetime, price: Decimal, promo_price: Decimal | None,
                       promo_text: str, actor: str) -> ScheduledPrice:
        if at <= self.clock():
            raise InvalidRequest("at: a timed change must lie in the future; change the price directly instead")
        item = await ScheduledPrice.create(product=product, at=at, price=price, promo_price=promo_price,
                                           promo_text=promo_text, created_by=actor)
        if at - self.clock() <= self.schedule_lead:
            await self._send_ahead(item, product)
        return item

    async def cancel(self, schedule_id: int, markets: frozenset[str] | None = None) -> ScheduledPrice:
        item = await ScheduledPrice.get_or_none(id=schedule_id).prefetch_related("product")
        if item is None or (markets is not None and item.product.market_id not in markets):  # type: ignore[attr-defined]
            raise NotFound(f"no timed change {schedule_id}")
        if item.state != ScheduleState.PENDING:
            raise Conflict(f"timed change {schedule_id} is already {item.state.value}")
        item.state = ScheduleState.CANCELLED
        await item.save(update_fields=["state"])
        self._sent_ahead = {key for key in self._sent_ahead if key[0] != item.id}
        # Labels holding the cancelled frame get the current price again as a timed frame for the same moment,
        # which replaces the held one (esl_codec.LabelScreen keeps one frame per page and moment).
        for label in await ShelfLabel.filter(product_id=item.product.id):  # type: ignore[attr-defined]
            await self.labels.show(label, item.product, page=0, at=item.at)
        return item

    async def _send_ahead(self, item: ScheduledPrice, product: Product, labels: list[ShelfLabel] | None = None,
                          *, again: bool = False) -> int:
        """Send the timed frame to the product's labels that have not had it (to `labels`, all of them again
        with `again`: after a label roamed, the frame may have been lost on the old station's air)."""
        content = await content_for(product)
        future = dataclasses.replace(content, price=item.price, promo_price=item.promo_price,
                                     promo_text=item.promo_text or content.promo_text)
        count = 0
        for label in labels if labels is not None else await ShelfLabel.filter(product=product):
            key = (item.id, label.device_id)
            if key in self._sent_ahead and not again:
                continue
            image = self.labels.render(label, future, 0)
            await self.labels.send_image(label, image, page=0, at=item.at)
            self._sent_ahead.add(key)
            count += 1
        return count

    async def timed_frames_for(self, label: ShelfLabel) -> int:
        """A label that roamed (or was just bound) gets the timed frames of its product's coming changes."""
        if label.product_id is None:  # type: ignore[attr-defined]
            return 0
        now = self.clock()
        count = 0
        for item in await ScheduledPrice.filter(product_id=label.product_id, state=ScheduleState.PENDING,  # type: ignore[attr-defined]
                                                at__gt=now, at__lte=now + self.schedule_lead).order_by("at"):
            count += await self._send_ahead(item, await label.product, [label], again=True)
        return count

    async def send_upcoming(self) -> int:
        """Send timed frames whose moment has come within the lead time (those scheduled far ahead)."""
        now = self.clock()
        count = 0
        for item in await ScheduledPrice.filter(state=ScheduleState.PENDING, at__gt=now,
                                                at__lte=now + self.schedule_lead).prefetch_related("product"):
            count += await self._send_ahead(item, item.product)
        return count

    async def apply_due(self) -> list[ScheduledPrice]:
        """Apply every timed change whose moment has passed: price history (source schedule), scales. Labels
        already switched on their own clocks and confirm it with their `shown` event when they next can.

        Each change is claimed with a conditional update first, so several ingest processes running this sweep
        apply it exactly once."""
        now = self.clock()
        applied = []
        for item in await ScheduledPrice.filter(state=ScheduleState.PENDING, at__lte=now).order_by("at"):
            product = await Product.get(id=item.product_id)  # type: ignore[attr-defined]
            old_price, old_promo = product.price, product.promo_price
            product.price, product.promo_price = item.price, item.promo_price
            if item.promo_text:
                product.promo_text = item.promo_text
            product.plu_version = await self._next_version(await product.stall if product.stall_id else None)  # type: ignore[attr-defined]
            async with in_transaction():
                claimed = await ScheduledPrice.filter(id=item.id, state=ScheduleState.PENDING).update(
                    state=ScheduleState.APPLIED, applied_at=now)
                if not claimed:
                    continue  # another process applied it
                await product.save()
                await PriceChange.create(product=product, source=PriceSource.SCHEDULE, actor=f"schedule:{item.id}",
                                         old_price=old_price, new_price=item.price, old_promo_price=old_promo,
                                         new_promo_price=item.promo_price, at=item.at)
            item.state, item.applied_at = ScheduleState.APPLIED, now
            self._sent_ahead = {key for key in self._sent_ahead if key[0] != item.id}
            await self._push_scales(product)
            applied.append(item)
        return applied

    async def sync_scales(self) -> int:
        """Send the PLU table to every active scale that was not sent its stall's newest version (a change made
        in a process without downlinks, a command lost on the way). Returns how many tables went out."""
        newest = {row["stall_id"]: row["top"] for row in await Product.filter(stall_id__not_isnull=True)
                  .annotate(top=Max("plu_version")).group_by("stall_id").values("stall_id", "top")}
        if not newest:
            return 0
        scales = await Device.filter(kind="scale", status="active", stall_id__in=list(newest))
        sent = {p.scale_id: p.sent_version for p in await ScalePlu.filter(scale_id__in=[s.id for s in scales])}
        count = 0
        for scale in scales:
            version = newest[scale.stall_id]  # type: ignore[attr-defined]
            if sent.get(scale.id, 0) < version:
                product = await Product.filter(stall_id=scale.stall_id).first()  # type: ignore[attr-defined]
                if product is not None:
                    await self._push_scales(product, only=scale.id)
                    count += 1
        return count
