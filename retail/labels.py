"""Shelf labels: binding, rendering what a label shows, sending it through its base station, confirmations,
roaming, LED flash.

An update renders the label's page for its product (retail/render.py), encodes it as a diff against what the
label last confirmed on that page, or in full (retail/esl_codec.py), and sends `show_image` wrapped in the
`relay` command of the label's current base station. The update stays *pending* until the label's `shown`
event names its image; a pending update is sent again through the label's new base station when the label
roams (a base station's `label_joined`, or the label's own telemetry naming another station), and by
`resend_stale` when no confirmation came in time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.models import Device, Market, Stall
from retail.commands import Clock, CommandSender, relay_to_label
from retail.esl_codec import LabelImage, encode, frame_info, frame_to_text
from retail.group_commit import GroupCommit
from retail.models import LabelFrame, Product, ShelfLabel
from retail.render import PAGES, LabelContent, LabelSpec, page_name, render_page

__all__ = ["LabelDispatcher", "LabelStats", "content_for"]

log = logging.getLogger(__name__)


@dataclass
class LabelStats:
    sent: int = 0
    resent: int = 0
    confirmed: int = 0
    bytes_sent: int = 0
    diff_frames: int = 0
    full_frames: int = 0
    no_route: int = 0  # updates waiting for the label to be heard by a base station
    # seconds from sending an update to its confirmation, most recent last (for p99 in the benchmark)
    latencies_s: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=200_000))


class _Places:
    """Market names, stalls and base-station markets change rarely but are read on every label update: kept
    for `ttl_s` so an update costs no extra queries for them."""

    def __init__(self, ttl_s: float = 30.0) -> None:
        self.ttl_s = ttl_s
        self._values: dict[tuple[str, Any], tuple[float, Any]] = {}

    async def get(self, kind: str, key: Any) -> Any:
        hit = self._values.get((kind, key))
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        if kind == "market":
            row = await Market.get_or_none(code=key).only("code", "name")
            value: Any = row.name if row else ""
        elif kind == "stall":
            stall = await Stall.get_or_none(id=key).only("id", "number", "holder_name")
            value = (stall.number, stall.holder_name) if stall else ("", "")
        else:  # the market segment of a base station's topic
            device = await Device.get_or_none(id=key).only("id", "market_id")
            value = device.market_id if device else None  # type: ignore[attr-defined]
        self._values[(kind, key)] = (time.monotonic(), value)
        return value


_PLACES = _Places()


async def content_for(product: Product, *, promo: bool = True, places: _Places = _PLACES) -> LabelContent:
    market = await places.get("market", product.market_id)  # type: ignore[attr-defined]
    stall_no, holder = await places.get("stall", product.stall_id) if product.stall_id else ("", "")  # type: ignore[attr-defined]
    return LabelContent(
        name=product.name, price=product.price, unit=product.unit, code=product.code, category=product.category,
        origin=product.origin, grade=product.grade, promo_price=product.promo_price if promo else None,
        promo_text=product.promo_text, trace_url=product.trace_url, stall_no=stall_no, holder=holder, market=market,
    )


class LabelDispatcher:
    def __init__(self, sender: CommandSender, clock: Clock, *, frame_cache: int = 50_000,
                 group_window_s: float = 0.002, group_max: int = 500) -> None:
        self.sender = sender
        self.clock = clock
        self.stats = LabelStats()
        self._frames: collections.OrderedDict[str, LabelImage] = collections.OrderedDict()
        self._frame_cache = frame_cache
        self._sent_monotonic: dict[tuple[str, str], float] = {}
        self._unsaved: dict[str, None] = {}  # confirmed images not yet in LabelFrame (ordered set)
        # Called with a label that was bound or moved to another base station (PriceBook sends it the timed
        # frames of coming price changes).
        self.on_moved: Callable[[ShelfLabel], Awaitable[Any]] | None = None
        # Batch writes of the labels' pending and shown state take turns, so that a confirmation read before a
        # price change's write cannot save the old pending state over it.
        self._write_lock = asyncio.Lock()
        self._shown: GroupCommit[tuple[str, str, int], bool] = GroupCommit(
            self._commit_shown, window_s=group_window_s, max_batch=group_max, name="retail label confirmations")

    # ---------------------------------------------------------------- binding

    async def bind(self, label_id: str, product: Product, actor: str) -> ShelfLabel:
        device = await Device.get_or_none(id=label_id)
        if device is None:
            raise NotFound(f"no device {label_id!r}")
        if device.kind != "esl":
            raise InvalidRequest(f"device {label_id!r} is a {device.kind}, not a shelf label (esl)")
        if device.market_id is not None and device.market_id != product.market_id:  # type: ignore[attr-defined]
            raise InvalidRequest(f"label {label_id!r} is in market {device.market_id}, the product in another")
        label, _ = await ShelfLabel.get_or_create(device_id=label_id, defaults=_label_defaults(device))
        label.product = product  # type: ignore[assignment]
        label.market_id = product.market_id  # type: ignore[attr-defined]
        label.bound_at = self.clock()
        label.bound_by = actor
        label.page = 0
        await label.save()
        await self.show(label, product)
        if self.on_moved is not None:
            await self.on_moved(label)
        return label

    async def unbind(self, label_id: str) -> ShelfLabel:
        label = await self.get(label_id)
        label.product = None  # type: ignore[assignment]
        label.pending_sha256 = None
        label.pending_since = None
        await label.save()
        return label

    async def get(self, label_id: str) -> ShelfLabel:
        label = await ShelfLabel.get_or_none(device_id=label_id)
        if label is None:
            raise NotFound(f"shelf label {label_id!r} is not bound and has never been seen")
        return label

    async def seen(self, label_id: str, **fields: Any) -> ShelfLabel | None:
        """Record what a label or its base station said about it (battery, signal); None for unknown devices."""
        label = await ShelfLabel.get_or_none(device_id=label_id)
        if label is None:
            device = await Device.get_or_none(id=label_id, kind="esl")
            if device is None:
                return None
            label = await ShelfLabel.create(device_id=label_id, **_label_defaults(device))
        changed = {k: v for k, v in fields.items() if v is not None and getattr(label, k) != v}
        if changed:
            for key, value in changed.items():
                setattr(label, key, value)
            await label.save(update_fields=list(changed))
        return label

    # ---------------------------------------------------------------- what labels show

    def render(self, label: ShelfLabel, content: LabelContent, page: int) -> LabelImage:
        return render_page(content, page, LabelSpec(label.width, label.height, label.colours))

    async def show(self, label: ShelfLabel, product: Product | None = None, *, page: int = 0,
                   at: datetime | None = None) -> str:
        """Render and send `page` of the label's product; returns the image's sha256.

        With `at` (a timed change) the frame is full, not a diff: the label holds it and switches on its own
        clock, and whatever it shows by then is not known for sure now."""
        product = product or (await label.product if label.product_id else None)  # type: ignore[attr-defined]
        if product is None:
            raise Conflict(f"label {label.device_id} is not bound to a product")
        content = await content_for(product)
        image = self.render(label, content, page)
        return await self.send_image(label, image, page=page, at=at)

    async def send_image(self, label: ShelfLabel, image: LabelImage, *, page: int = 0,
                         at: datetime | None = None) -> str:
        command = await self._prepare(label, image, page, at)
        if at is None:
            await label.save(update_fields=PENDING_FIELDS)
        await self._relay(label, command)
        return image.sha256

    async def show_many(self, items: list[tuple[ShelfLabel, Product]], *, page: int = 0) -> int:
        """`show` for many labels at once (a batch price change): one write for all of them."""
        async with self._write_lock:
            commands = await self._prepare_many(items, page)
        for label, command in commands:
            await self._relay(label, command)
        return len(commands)

    async def show_products(self, products: list[Product], *, page: int = 0) -> int:
        """Every label bound to `products` shows their current state: one read and one write for all of them."""
        async with self._write_lock:  # read and write the labels' pending state without a confirmation between
            commands = await self.prepare_products(products, page=page)
            if commands:
                await save_all([label for label, _ in commands], PENDING_FIELDS)
        await self.relay_all(commands)
        return len(commands)

    @property
    def write_lock(self) -> asyncio.Lock:
        """Held while a batch reads and writes labels' pending or shown state."""
        return self._write_lock

    async def prepare_products(self, products: list[Product], *, page: int = 0) -> list[tuple[ShelfLabel, Any]]:
        """The commands that make every label bound to `products` show them, with the labels' new pending state
        set but not saved: hold `write_lock`, save `PENDING_FIELDS` of the labels (in the caller's transaction),
        then `relay_all`."""
        by_id = {p.id: p for p in products}
        if not by_id:
            return []
        labels = await ShelfLabel.filter(product_id__in=list(by_id))
        commands = []
        for label in labels:
            image = self.render(label, await content_for(by_id[label.product_id]), page)  # type: ignore[attr-defined]
            commands.append((label, await self._prepare(label, image, page, None)))
        return commands

    async def relay_all(self, commands: list[tuple[ShelfLabel, Any]]) -> None:
        for label, command in commands:
            await self._relay(label, command)

    async def _prepare_many(self, items: list[tuple[ShelfLabel, Product]], page: int) -> list[tuple[ShelfLabel, Any]]:
        commands = []
        for label, product in items:
            image = self.render(label, await content_for(product), page)
            commands.append((label, await self._prepare(label, image, page, None)))
        if commands:
            await save_all([label for label, _ in commands], PENDING_FIELDS)
        return commands

    async def _prepare(self, label: ShelfLabel, image: LabelImage, page: int, at: datetime | None) -> dict[str, Any]:
        """The `show_image` command for `image`: a diff against what the label confirmed on that page, unless a
        timed change (the label's page by then is not known) or an unconfirmed update (the label may show either
        image now) makes a full frame the safe choice."""
        await self._remember(image)
        safe_to_diff = at is None and label.pending_sha256 is None
        base = await self._frame(label.shown.get(str(page))) if safe_to_diff else None
        frame = encode(image, base)
        command = {"command": "show_image", "image_sha256": image.sha256, "frame": frame_to_text(frame), "page": page}
        if at is not None:
            command["at"] = at.isoformat()
        else:
            label.pending_sha256 = image.sha256
            label.pending_since = self.clock()
            label.page = page
        if frame_info(frame).diff:
            self.stats.diff_frames += 1
        else:
            self.stats.full_frames += 1
        self.stats.bytes_sent += len(frame)
        return command

    async def flash(self, label_id: str, colour: str = "green", seconds: int = 10) -> None:
        label = await self.get(label_id)
        await self._relay(label, {"command": "flash_led", "colour": colour, "seconds": seconds}, required=True)

    async def switch_page(self, label_id: str, page: int) -> ShelfLabel:
        page_name(page)
        label = await self.get(label_id)
        if label.product_id is None:  # type: ignore[attr-defined]
            raise Conflict(f"label {label_id} is not bound to a product")
        if str(page) in label.shown:
            await self._relay(label, {"command": "show_page", "page": page}, required=True)
            label.page = page
            await label.save(update_fields=["page"])
        else:
            await self.show(label, page=page)
        return label

    # ---------------------------------------------------------------- confirmations and roaming

    async def confirmed(self, label_id: str, sha256: str, page: int) -> bool:
        """The label's `shown` event: it displays `sha256` on `page`. True when it confirms the pending update.
        Concurrent confirmations are group-committed (one read and one write for a batch)."""
        return await self._shown.submit((label_id, sha256, page))

    async def confirmed_many(self, shown: list[tuple[str, str, int]]) -> int:
        """Many `shown` events at once (ingest hands them over in bursts): one read and one write for all.
        Returns how many confirmed a pending update."""
        return sum(await self._confirm(shown))

    async def _confirm(self, shown: list[tuple[str, str, int]]) -> list[bool]:
        """Apply `shown` events in order (a label's later event builds on its earlier one); for each, whether it
        confirmed the label's pending update. Unknown labels answer False."""
        async with self._write_lock:
            labels = {label.device_id: label
                      for label in await ShelfLabel.filter(device_id__in=list({s[0] for s in shown}))}
            now = self.clock()
            results = []
            for label_id, sha256, page in shown:
                label = labels.get(label_id)
                if label is None:
                    results.append(False)
                    continue
                label.shown = {**label.shown, str(page): sha256}
                label.page = page
                label.last_ack_at = now
                if sha256 in self._frames:
                    self._unsaved[sha256] = None
                matched = label.pending_sha256 == sha256
                if matched:
                    label.pending_sha256 = None
                    label.pending_since = None
                results.append(matched)
                started = self._sent_monotonic.pop((label.device_id, sha256), None)
                if started is not None:
                    self.stats.latencies_s.append(time.monotonic() - started)
            if labels:
                await save_all(list(labels.values()), ["shown", "page", "last_ack_at", *PENDING_FIELDS[:2]])
        self.stats.confirmed += sum(results)
        return results

    async def _commit_shown(self, batch: list[tuple[str, str, int]]) -> list[bool | Exception]:
        return list(await self._confirm(batch))

    async def aclose(self) -> None:
        await self._shown.aclose()

    async def refresh_failed(self, label_id: str) -> bool:
        """The label could not show a frame (a diff against an image it no longer has, a corrupt frame): forget
        what it showed on that page and send the pending image again as a full frame."""
        label = await ShelfLabel.get_or_none(device_id=label_id)
        if label is None or label.product_id is None:  # type: ignore[attr-defined]
            return False
        if str(label.page) not in label.shown:
            # A full frame failed: sending it again would fail again (wrong panel size?). The label's next state
            # report corrects its size, and the next update goes out then.
            log.warning("label %s could not show a full frame; waiting for its next state report", label_id)
            return False
        label.shown = {k: v for k, v in label.shown.items() if k != str(label.page)}
        label.pending_sha256 = None  # so that the frame below is a full one
        await label.save(update_fields=["shown", "pending_sha256"])
        self.stats.resent += 1
        await self.show(label, page=label.page)
        return True

    async def roamed(self, label_id: str, base_station_id: str, rssi_dbm: int | None = None) -> bool:
        """The label is now heard by `base_station_id`; a pending update follows it there. True if it moved."""
        # Under the write lock, so that a price change being prepared either sees the new station or has saved
        # its pending update before we look: otherwise its frame goes to the old station and nothing follows it.
        async with self._write_lock:
            label = await self.seen(label_id)
            if label is None or label.base_station_id == base_station_id:
                if label is not None and rssi_dbm is not None:
                    await self.seen(label_id, rssi_dbm=rssi_dbm)
                return False
            label.base_station_id = base_station_id
            fields_ = ["base_station_id"]
            if rssi_dbm is not None:
                label.rssi_dbm = rssi_dbm
                fields_.append("rssi_dbm")
            await label.save(update_fields=fields_)
        log.info("label %s roamed to base station %s", label_id, base_station_id)
        if label.pending_sha256 and label.product_id is not None:  # type: ignore[attr-defined]
            self.stats.resent += 1
            await self.show(label, page=label.page)
        if self.on_moved is not None:
            await self.on_moved(label)
        return True

    async def resend_stale(self, older_than_s: float) -> int:
        """Send again every update not confirmed within `older_than_s` (lost on the radio, label asleep)."""
        now = self.clock()
        count = 0
        async for label in ShelfLabel.filter(pending_sha256__not_isnull=True, product_id__not_isnull=True):
            if label.pending_since is not None and (now - label.pending_since).total_seconds() >= older_than_s:
                self.stats.resent += 1
                await self.show(label, page=label.page)
                count += 1
        return count

    # ---------------------------------------------------------------- internals

    async def _relay(self, label: ShelfLabel, command: dict[str, Any], *, required: bool = False) -> None:
        if not label.base_station_id:
            self.stats.no_route += 1
            if required:
                raise Conflict(f"label {label.device_id} has not been heard by any base station yet")
            return  # sent when a base station reports the label (roamed)
        market = await _PLACES.get("station", label.base_station_id) or label.market_id
        if command["command"] == "show_image" and "at" not in command:
            if len(self._sent_monotonic) >= MAX_TRACKED:  # labels that never answer must not grow this forever
                del self._sent_monotonic[next(iter(self._sent_monotonic))]
            self._sent_monotonic[(label.device_id, command["image_sha256"])] = time.monotonic()
        await self.sender.send(label.base_station_id, market, relay_to_label(label.device_id, command))
        self.stats.sent += 1

    async def _remember(self, image: LabelImage) -> None:
        if image.sha256 in self._frames:
            self._frames.move_to_end(image.sha256)
        else:
            self._cache(image)

    async def save_frames(self) -> int:
        """Store the images labels confirmed since the last call, in one batch: after a restart they are the
        bases of diff frames (without them the next update of a page is a full frame, which is also fine)."""
        todo, self._unsaved = self._unsaved, {}
        images = [self._frames[sha] for sha in todo if sha in self._frames]
        if not images:
            return 0
        known = set(await LabelFrame.filter(sha256__in=[i.sha256 for i in images]).values_list("sha256", flat=True))
        rows = [LabelFrame(sha256=i.sha256, width=i.width, height=i.height, colours=i.colours, planes=i.planes)
                for i in images if i.sha256 not in known]
        if rows:
            await LabelFrame.bulk_create(rows, batch_size=500)
        return len(rows)

    async def _frame(self, sha256: str | None) -> LabelImage | None:
        if not sha256:
            return None
        image = self._frames.get(sha256)
        if image is None:
            row = await LabelFrame.get_or_none(sha256=sha256)
            if row is None:
                return None
            image = LabelImage(row.width, row.height, row.colours, bytes(row.planes))
            self._cache(image)
        return image

    def _cache(self, image: LabelImage) -> None:
        self._frames[image.sha256] = image
        while len(self._frames) > self._frame_cache:
            self._frames.popitem(last=False)


async def save_all(rows: list[Any], fields: list[str]) -> None:
    """Save the same fields of many rows in one transaction. (tortoise's bulk_update builds one CASE per field
    and row in Python, which costs more than the plain UPDATEs it saves; one commit is what matters.)"""
    async with in_transaction():
        for row in rows:
            await row.save(update_fields=fields)


def _label_defaults(device: Device) -> dict[str, Any]:
    """Panel size and colours from the device's model specs (`resolution: [w, h]`, `colours`), else 296×128 bwr."""
    specs = (device.metadata or {}) | (device.labels or {})
    resolution = specs.get("resolution") or [296, 128]
    try:
        width, height = int(resolution[0]), int(resolution[1])
    except (TypeError, ValueError, IndexError):
        width, height = 296, 128
    colours = specs.get("colours") if specs.get("colours") in ("bw", "bwr", "bwry") else "bwr"
    return {"market_id": device.market_id, "width": width, "height": height,  # type: ignore[attr-defined]
            "colours": colours}


PAGE_COUNT = len(PAGES)
PENDING_FIELDS = ["pending_sha256", "pending_since", "page"]
MAX_TRACKED = 200_000  # updates whose send time is kept for the confirmation latency statistic
