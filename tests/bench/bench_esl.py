"""Shelf labels (BJ 4.2.9): render + encode throughput, platform-side label updates per hour, and the time from a
price change to the label's confirmation through 50 simulated base stations with a radio model.

Baselines in the same run: a PNG of the same page (what a platform that ships images would send) for the codec
rows, and the issue's goals for the platform rows (600,000 updates/hour, LED p99 < 1 s, bind-then-show p99 < 30 s).

The radio model (`RadioModel`, documented in docs/retail.md): each base station sends one frame at a time at
`RADIO_BPS` with `FRAME_OVERHEAD_S` per frame (preamble, addressing, the label's radio ack); a label listens
once every `WAKE_S` (its wake-up interval while the market is open), so a frame waits for the label's next wake
slot; the label's `shown` confirmation takes `ACK_S`. Latencies are in the model's time, which starts from the
wall-clock moment the platform handed the command to the base station, so platform processing counts too.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

STATIONS = 50
RADIO_BPS = 125_000  # effective bit rate of a 2.4 GHz ESL radio link after coding and contention
FRAME_OVERHEAD_S = 0.008
WAKE_S = 0.5
ACK_S = 0.004
JOIN_UPLINK_S = 0.05  # a base station's `label_joined` report: uplink to the platform after it heard the label
ROAMERS = 500  # labels that move to another base station
RESEND_AFTER_S, RESEND_SWEEP_S = 20.0, 5.0  # RetailService's defaults: resend_after_s, swept every resend_after_s / 4
WORKERS = 16  # single price changes processed concurrently by the platform
WORKERS_MANY = 64
CHUNKS = 3  # rounds in which single changes written alone and group-committed alternate
BATCH = 500  # price changes per price list


@dataclass
class RadioModel:
    """A `CommandSender` that models the base stations' radio; see the module docstring."""

    started: float = field(default_factory=time.perf_counter)
    free_at: dict[str, float] = field(default_factory=dict)
    acks: dict[tuple[str, str], float] = field(default_factory=dict)  # (label, sha or "led") -> model time
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    bytes_on_air: int = 0
    frames: int = 0
    service: Any = None
    confirmations: list[tuple[str, str, int]] = field(default_factory=list)
    last_ack: dict[str, float] = field(default_factory=dict)  # label -> model time of its latest confirmation
    # label -> the station that actually hears it; labels not listed are heard wherever the platform sends
    location: dict[str, str] = field(default_factory=dict)
    lost: int = 0  # frames sent through a station the label had left

    def now(self) -> float:
        return time.perf_counter() - self.started

    async def send(self, device_id: str, market: str | None, command: dict[str, Any]) -> None:
        if command["command"] != "relay":
            return
        payload = command["payload"]
        size = 24 + (len(base64.b64decode(payload["frame"])) if payload.get("frame") else 8)
        sent = self.now()
        slot = sent + self.rng.uniform(0, WAKE_S)  # the label's next wake-up
        start = max(slot, self.free_at.get(device_id, 0.0))
        done = start + FRAME_OVERHEAD_S + size * 8 / RADIO_BPS
        self.free_at[device_id] = done
        self.bytes_on_air += size
        self.frames += 1
        if self.location.get(command["label_id"], device_id) != device_id:
            self.lost += 1  # on the air of a station the label no longer hears: no wake slot, no confirmation
            return
        key = payload.get("image_sha256", "led")
        self.acks[(command["label_id"], key)] = done + ACK_S
        self.last_ack[command["label_id"]] = done + ACK_S
        if payload["command"] == "show_image":
            self.confirmations.append((command["label_id"], payload["image_sha256"], payload.get("page", 0)))


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- codec rows


def _codec_rows(count: int) -> list[dict[str, Any]]:
    import dataclasses

    from retail.esl_codec import encode
    from retail.render import LabelContent, LabelSpec, render_page

    spec = LabelSpec(296, 128, "bwr")
    contents = [LabelContent(name=f"商品{n % 97}", price=Decimal(n % 5000) / 100 + 1, code=f"{n:05d}",
                             stall_no="A03", market="福田市场") for n in range(count)]
    began = time.perf_counter()
    images = [render_page(c, "price", spec) for c in contents]
    render_s = time.perf_counter() - began
    changed = [render_page(dataclasses.replace(c, price=c.price + Decimal("0.50")), "price", spec) for c in contents]

    began = time.perf_counter()
    full = [encode(img) for img in images]
    full_s = time.perf_counter() - began
    began = time.perf_counter()
    diffs = [encode(new, old) for new, old in zip(changed, images, strict=True)]
    diff_s = time.perf_counter() - began
    began = time.perf_counter()
    pngs = []
    for img in images:
        buffer = io.BytesIO()
        img.to_pil().save(buffer, format="PNG", optimize=False)
        pngs.append(buffer.getvalue())
    png_s = time.perf_counter() - began
    png_bytes = statistics.mean(len(p) for p in pngs)
    return [
        {"case": "render price page 296×128 bwr (Pillow)", "per s": count / render_s, "bytes": len(images[0].planes),
         "note": "raw packed planes"},
        {"case": "baseline: PNG of the page", "per s": count / png_s, "bytes": png_bytes, "vs baseline": 1.0},
        {"case": "encode full frame", "per s": count / full_s, "bytes": statistics.mean(len(f) for f in full),
         "vs baseline": png_bytes / statistics.mean(len(f) for f in full), "note": "vs baseline: times smaller"},
        {"case": "encode diff frame (price change)", "per s": count / diff_s,
         "bytes": statistics.mean(len(f) for f in diffs),
         "vs baseline": png_bytes / statistics.mean(len(f) for f in diffs), "note": "vs baseline: times smaller"},
    ]


# ---------------------------------------------------------------- platform rows


async def _seed(labels: int, console: Console) -> None:
    from fleet.models import Market, Stall
    from fleet.registry import Registry
    from fleet.schemas import DeviceCreate, MarketCreate, StallCreate, VendorCreate
    from retail.models import Product, ShelfLabel

    registry = Registry(master_key=b"b" * 32)
    await registry.create_market(MarketCreate(code="BENCH", name="基准市场"))
    await registry.create_stall("BENCH", StallCreate(number="A01", holder_name="王记"))
    vendor, _ = await registry.create_vendor(VendorCreate(code="bench", name="bench"))
    rows = [DeviceCreate(serial=f"BS{n:03d}", kind="esl_base_station", market="BENCH") for n in range(STATIONS)]
    rows += [DeviceCreate(serial=f"EL{n:06d}", kind="esl", market="BENCH") for n in range(labels + 2_000)]
    for start in range(0, len(rows), 10_000):
        await registry.register_devices(vendor, rows[start:start + 10_000])
    market = await Market.get(code="BENCH")
    stall = await Stall.get(market=market, number="A01")
    products = [Product(market=market, stall=stall, code=f"{n:06d}", name=f"商品{n % 97}",
                        price=Decimal(n % 5000) / 100 + 1) for n in range(labels + 2_000)]
    await Product.bulk_create(products, batch_size=2_000)
    ids = {p.code: p.id for p in await Product.all().only("id", "code")}
    await ShelfLabel.bulk_create([
        ShelfLabel(device_id=f"bench-EL{n:06d}", market_id="BENCH", product_id=ids[f"{n:06d}"],
                   base_station_id=f"bench-BS{n % STATIONS:03d}")
        for n in range(labels)
    ] + [
        ShelfLabel(device_id=f"bench-EL{n:06d}", market_id="BENCH", base_station_id=f"bench-BS{n % STATIONS:03d}")
        for n in range(labels, labels + 2_000)
    ], batch_size=2_000)
    console.print(f"seeded {labels:,} bound labels, 2,000 unbound, {STATIONS} base stations")


async def _confirm(service: Any, radio: RadioModel) -> None:
    """Feed the labels' `shown` events back in bursts, as the bus hands them to the service."""
    from fleet.envelope import Envelope

    pending, radio.confirmations = radio.confirmations, []
    envelopes = [Envelope(device_id=label, kind="esl", channel="event", ts=datetime.now(UTC), seq=n,
                          payload={"type": "shown", "image_sha256": sha, "page": page})
                 for n, (label, sha, page) in enumerate(pending)]
    for start in range(0, len(envelopes), 500):
        await service.handle_many(envelopes[start:start + 500])
    await service.labels.save_frames()  # what the service's background task does every few seconds


async def _single_changes(service: Any, radio: RadioModel, products: list[Any],
                          workers: int) -> tuple[float, list[float]]:
    """`len(products)` single price changes by `workers` concurrent callers; (changes per second, latencies)."""
    from retail.models import PriceSource

    queue: asyncio.Queue[tuple[Any, Decimal]] = asyncio.Queue()
    for n, product in enumerate(products):
        queue.put_nowait((product, Decimal(n % 9000) / 100 + 1))
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            product, price = queue.get_nowait()
            asked = radio.now()
            await service.prices.update(product, {"price": price}, "bench", PriceSource.API)
            ack = radio.last_ack.get(f"bench-EL{int(product.code):06d}")
            if ack is not None:
                latencies.append(ack - asked)
            if len(radio.confirmations) >= 200:
                await _confirm(service, radio)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    await _confirm(service, radio)
    return len(products) / (time.perf_counter() - began), latencies


async def _platform_rows(labels: int, updates: int, console: Console) -> list[dict[str, Any]]:
    from marketfleet import db
    from retail.models import PriceSource, Product
    from retail.service import RetailService

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        await db.connect(f"sqlite://{Path(tmp) / 'registry.sqlite3'}")
        try:
            await _seed(labels, console)
            radio = RadioModel()
            service = RetailService(radio)
            products = await Product.filter(labels__device_id__not_isnull=True).order_by("id").limit(labels)

            # One change at a time, as people and scales send them (WORKERS or WORKERS_MANY callers at once): each
            # written alone (group_max=1: what single changes cost before group commit) and group-committed. The
            # two alternate in CHUNKS rounds, each on its own products and a fresh service, so that the registry
            # growing during the run (history, stored label frames) weighs on both alike.
            singles = max(500, updates // 20)
            chunk = singles // CHUNKS
            offset = 0
            service = RetailService(radio)
            for workers in (WORKERS, WORKERS_MANY):
                spent = {False: 0.0, True: 0.0}
                latencies: dict[bool, list[float]] = {False: [], True: []}
                writes = {False: 0, True: 0}
                for _ in range(CHUNKS):
                    for grouped in (False, True):
                        variant = RetailService(radio, group_max=500 if grouped else 1,
                                                group_window_s=0.002 if grouped else 0.0)
                        chosen = [products[(offset + n) % len(products)] for n in range(chunk)]
                        offset += chunk
                        per_s, lat = await _single_changes(variant, radio, chosen, workers)
                        await variant.aclose()
                        spent[grouped] += chunk / per_s
                        latencies[grouped] += lat
                        writes[grouped] += variant.prices.group_stats.batches
                alone = chunk * CHUNKS / spent[False]
                for grouped in (False, True):
                    per_s = chunk * CHUNKS / spent[grouped]
                    how = "group commit" if grouped else "each written alone"
                    rows.append({"case": f"platform: {chunk * CHUNKS:,} single price changes, {how} ({workers} at a "
                                         "time)", "per s": per_s, "per hour": per_s * 3600,
                                 "vs baseline": per_s / alone,
                                 "note": f"{per_s * 3600 / 600_000:.2f} of goal 600,000/h; "
                                         f"{chunk * CHUNKS / max(1, writes[grouped]):.1f} changes per write"})
                    rows.append({"case": f"single change → label confirmation ({how}, {workers} at a time)",
                                 "p50 s": _p(latencies[grouped], 0.5), "p99 s": _p(latencies[grouped], 0.99),
                                 "note": f"model time; wake {WAKE_S} s, {RADIO_BPS // 1000} kbit/s"})

            # Price lists: BATCH changes per call, `updates` in all, across every label.
            sent_before = service.labels.stats.sent
            diff_before, full_before = service.labels.stats.diff_frames, service.labels.stats.full_frames
            bytes_before = service.labels.stats.bytes_sent
            batch_latencies: list[float] = []
            began = time.perf_counter()
            for start in range(0, updates, BATCH):
                items = [(products[n % len(products)], {"price": Decimal((n * 7) % 9000) / 100 + 1})
                         for n in range(start, min(updates, start + BATCH))]
                asked = radio.now()
                radio.last_ack.clear()
                await service.prices.update_many(items, "bench", PriceSource.API)
                batch_latencies += [radio.last_ack[label] - asked for label in radio.last_ack]
                await _confirm(service, radio)
            elapsed = time.perf_counter() - began
            stats = service.labels.stats
            sent = stats.sent - sent_before
            per_hour = updates / elapsed * 3600
            rows.append({"case": f"platform: {updates:,} changes as price lists of {BATCH} ({labels:,} labels, "
                                 f"{STATIONS} stations)", "per s": updates / elapsed, "per hour": per_hour,
                         "vs baseline": per_hour / 600_000, "bytes": (stats.bytes_sent - bytes_before) / max(1, sent),
                         "note": f"vs goal 600,000/h; diff {stats.diff_frames - diff_before:,}, "
                                 f"full {stats.full_frames - full_before:,} frames"})
            rows.append({"case": "price list → label confirmation (model time, from the list's start)",
                         "p50 s": _p(batch_latencies, 0.5), "p99 s": _p(batch_latencies, 0.99)})

            flashes: list[float] = []
            for n in range(min(2_000, labels)):
                asked = radio.now()
                await service.labels.flash(f"bench-EL{n:06d}", "red", 5)
                flashes.append(radio.acks[(f"bench-EL{n:06d}", "led")] - asked)
            rows.append({"case": "LED flash → label (model time)", "p50 s": _p(flashes, 0.5),
                         "p99 s": _p(flashes, 0.99), "vs baseline": 1.0 / max(_p(flashes, 0.99), 1e-9),
                         "note": "vs goal p99 < 1 s: ratio > 1 meets it"})

            binds: list[float] = []
            spare = await Product.filter(labels__device_id__isnull=True).order_by("id").limit(1_000)
            for n, product in enumerate(spare):
                label = f"bench-EL{labels + n:06d}"
                asked = radio.now()
                await service.labels.bind(label, product, actor="bench")
                sha = radio.confirmations[-1][1]
                binds.append(radio.acks[(label, sha)] - asked)
            await _confirm(service, radio)
            rows.append({"case": "bind → label shows it (model time)", "p50 s": _p(binds, 0.5),
                         "p99 s": _p(binds, 0.99), "vs baseline": 30.0 / max(_p(binds, 0.99), 1e-9),
                         "note": "vs goal p99 < 30 s: ratio > 1 meets it"})
            rows += await _roaming_rows(service, radio, labels)
            rows.append({"case": "radio load", "per s": radio.frames / max(radio.now(), 1e-9),
                         "bytes": radio.bytes_on_air / max(1, radio.frames),
                         "note": f"{radio.frames:,} frames, {radio.bytes_on_air / 1e6:.1f} MB on air"})
        finally:
            await db.close()
    return rows


async def _roaming_rows(service: Any, radio: RadioModel, labels: int) -> list[dict[str, Any]]:
    """ROAMERS labels move to the next base station; each gets a price change at once, which goes out through the
    old station and is lost (unless the label was re-routed first). The new station hears the label at its next
    wake-up and reports `label_joined` (JOIN_UPLINK_S later), handed to the service one by one as the bus does;
    the platform re-routes the label and sends the pending update through the new station. Measured from the
    move: the re-route (the platform has handled the report) and the label's confirmation of the update via the
    new station, in model time."""
    from fleet.envelope import Envelope
    from retail.models import PriceSource, Product

    count = min(ROAMERS, labels)
    ids = [f"bench-EL{n:06d}" for n in range(count)]
    target = {label: f"bench-BS{(n + 1) % STATIONS:03d}" for n, label in enumerate(ids)}
    products = {p.code: p for p in await Product.filter(code__in=[f"{n:06d}" for n in range(count)])}
    moved: dict[str, float] = {}
    routed: dict[str, float] = {}
    lost_before = radio.lost
    for label in ids:
        moved[label] = radio.now()
        radio.location[label] = target[label]
        radio.last_ack.pop(label, None)
    items = [(products[f"{n:06d}"], {"price": Decimal(n % 900) / 100 + 2}) for n in range(count)]

    loop = asyncio.get_running_loop()
    heard = {label: moved[label] + radio.rng.uniform(0, WAKE_S) for label in ids}  # the label's next wake-up

    async def report(label: str) -> None:
        due = heard[label] + JOIN_UPLINK_S - radio.now()
        if due > 0:
            await asyncio.sleep(due)
        envelope = Envelope(device_id=target[label], kind="esl_base_station", channel="event", ts=datetime.now(UTC),
                            seq=0, payload={"type": "label_joined", "label_id": label, "rssi_dbm": -60})
        await service.handle(envelope)
        routed[label] = radio.now()

    began = loop.time()
    # The price list and the new stations' reports run side by side, as they would: most labels are re-routed
    # after their update went out through the old station (lost there), a few before it was made.
    await asyncio.gather(service.prices.update_many(items, "bench", PriceSource.API),
                         *(report(label) for label in ids))
    await _confirm(service, radio)
    spent = loop.time() - began
    shows = [radio.last_ack[label] - moved[label] for label in ids if label in radio.last_ack]
    # Labels re-routed while the price list was being written can have had their frame sent through the old
    # station after the re-route found nothing pending: the resend sweep catches them. Run the sweep now and
    # count it as happening at its latest moment: RESEND_AFTER_S after the change plus one sweep period.
    missed = [label for label in ids if label not in radio.last_ack]
    swept_at = radio.now()
    await service.labels.resend_stale(0.0)
    await _confirm(service, radio)
    shows += [radio.last_ack[label] - swept_at + RESEND_AFTER_S + RESEND_SWEEP_S for label in missed
              if label in radio.last_ack]
    routes = [routed[label] - moved[label] for label in ids]
    for label in ids:
        radio.location.pop(label, None)
    return [
        {"case": f"roaming: {count} labels move station, price change at once → label shows it via the new station",
         "p50 s": _p(shows, 0.5), "p99 s": _p(shows, 0.99), "vs baseline": 30.0 / max(_p(shows, 0.99), 1e-9),
         "note": f"vs goal p99 ≤ 30 s (vs seed 3 min: {180.0 / max(_p(shows, 0.99), 1e-9):.0f}); "
                 f"{len(shows)}/{count} shown, {len(missed)} by the 20 s resend sweep, "
                 f"{radio.lost - lost_before} frames lost on old stations, "
                 f"{spent:.1f} s wall"},
        {"case": "roaming: label moved → platform re-routed it (new station's report handled)",
         "p50 s": _p(routes, 0.5), "p99 s": _p(routes, 0.99), "note": f"wake {WAKE_S} s + {JOIN_UPLINK_S} s uplink"},
    ]


async def run(console: Console, quick: bool) -> list[dict[str, Any]]:
    labels, updates = (2_000, 6_000) if quick else (20_000, 60_000)
    rows = _codec_rows(300 if quick else 2_000)
    rows += await _platform_rows(labels, updates, console)
    return rows
