"""The demo market `./run.sh --demo` seeds: one market, its stalls, a demo vendor and a device of every kind."""

from __future__ import annotations

from rich.console import Console

from fleet.kinds import DeviceKind
from fleet.models import Market, Vendor
from fleet.schemas import DeviceCreate, MarketCreate, StallCreate, VendorCreate
from marketfleet.platform import Platform

DEMO_MARKET = MarketCreate(code="SZ-FT-001", name="福田智慧农贸市场 (demo)", district="福田区")
DEMO_VENDOR = VendorCreate(code="demo", name="Demo Devices Co.")
DEMO_COUNTS = {
    DeviceKind.SCALE: 20,
    DeviceKind.ESL_BASE_STATION: 2,
    DeviceKind.ESL: 40,
    DeviceKind.CAMERA: 4,
    DeviceKind.FLOW_COUNTER: 2,
    DeviceKind.FOOD_DETECTOR: 1,
    DeviceKind.ENV_SENSOR: 4,
    DeviceKind.FIRE_PANEL: 1,
    DeviceKind.COLD_LOCKER: 2,
    DeviceKind.THERMOMETER: 2,
    DeviceKind.DISPLAY: 4,
}


async def seed_demo(platform: Platform, console: Console) -> dict[str, str]:
    """Create the demo market and devices (idempotent); returns the credentials of devices created now."""
    registry = platform.registry
    if not await Market.exists(code=DEMO_MARKET.code):
        await registry.create_market(DEMO_MARKET)
        for number in range(1, 21):
            await registry.create_stall(DEMO_MARKET.code, StallCreate(number=f"A{number:02d}"))
    vendor = await Vendor.get_or_none(code=DEMO_VENDOR.code)
    if vendor is None:
        vendor, _ = await registry.create_vendor(DEMO_VENDOR)
    rows = [
        DeviceCreate(serial=f"{kind.value.upper()}-{n:04d}", kind=kind, market=DEMO_MARKET.code)
        for kind, count in DEMO_COUNTS.items()
        for n in range(1, count + 1)
    ]
    result = await registry.register_devices(vendor, rows)
    console.print(f"demo market {DEMO_MARKET.code}: {result.created} devices created, {result.existing} existing")
    return {r.device_id: r.secret for r in result.rows if r.status == "created" and r.device_id and r.secret}
