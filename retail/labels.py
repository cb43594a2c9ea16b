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

import collections
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.models import Device
from retail.commands import Clock, CommandSender, relay_to_label
from retail.esl_codec import LabelImage, encode, frame_to_text
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


async def content_for(product: Product, *, promo: bool = True) -> LabelContent:
    await product.fetch_related("market", "stall")
    market, stall = product.market, product.stall
    return LabelContent(
        name=product.name, price=product.price, unit=product.unit, code=product.code, category=product.category,
        origin=product.origin, grade=product.grade, promo_price=product.promo_price if promo else None,
        promo_text=product.promo_text, trace_url=product.trace_url, stall_no=stall.number if stall else "",
        holder=stall.holder_name if stall else "", market=market.name if market else "",
    )


class LabelDispatcher:
    def __init__(self, sender: CommandSender, clock: Clock, *, frame_cache: int = 50_000) -> None:
        self.sender = sender
        self.clock = clock
        self.stats = LabelStats()
        self._frames: collections.OrderedDict[str, LabelImage] = collections.OrderedDict()
        self._frame_cache = frame_cache
        self._sent_monotonic: dict[tuple[str, str], float] = {}

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
        await self._remember(image)
        base = None if at is not None else await self._frame(label.shown.get(str(page)))
        frame = encode(image, base)
        command = {"command": "show_image", "image_sha256": image.sha256, "frame": frame_to_text(frame), "page": page}
        if at is not None:
            command["at"] = at.isoformat()
        if base is not None and len(frame) < 200 + len(image.planes) // 8:
            self.stats.diff_frames += 1
        else:
            self.stats.full_frames += 1
        if at is None:
            label.pending_sha256 = image.sha256
            label.pending_since = self.clock()
            label.page = page
            await label.save(update_fields=["pending_sha256", "pending_since", "page"])
        await self._relay(label, command)
        self.stats.bytes_sent += len(frame)
        return image.sha256

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
        """The label's `shown` event: it displays `sha256` on `page`. True when it confirms the pending update."""
        label = await ShelfLabel.get_or_none(device_id=label_id)
        if label is None:
            return False
        label.shown = {**label.shown, str(page): sha256}
        label.page = page
        label.last_ack_at = self.clock()
        fields_ = ["shown", "page", "last_ack_at"]
        matched = label.pending_sha256 == sha256
        if matched:
            label.pending_sha256 = None
            label.pending_since = None
            fields_ += ["pending_sha256", "pending_since"]
            self.stats.confirmed += 1
        started = self._sent_monotonic.pop((label_id, sha256), None)
        if started is not None:
            self.stats.latencies_s.append(time.monotonic() - started)
        await label.save(update_fields=fields_)
        return matched

    async def roamed(self, label_id: str, base_station_id: str, rssi_dbm: int | None = None) -> bool:
        """The label is now heard by `base_station_id`; a pending update follows it there. True if it moved."""
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
        station = await Device.get_or_none(id=label.base_station_id).only("id", "market_id")
        market = station.market_id if station is not None else label.market_id  # type: ignore[attr-defined]
        if command["command"] == "show_image" and "at" not in command:
            self._sent_monotonic[(label.device_id, command["image_sha256"])] = time.monotonic()
        await self.sender.send(label.base_station_id, market, relay_to_label(label.device_id, command))
        self.stats.sent += 1

    async def _remember(self, image: LabelImage) -> None:
        if image.sha256 in self._frames:
            self._frames.move_to_end(image.sha256)
            return
        self._cache(image)
        await LabelFrame.get_or_create(
            sha256=image.sha256,
            defaults={"width": image.width, "height": image.height, "colours": image.colours, "planes": image.planes},
        )

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
