"""The demo market `./run.sh --demo` seeds: one market, its stalls, a demo vendor and a device of every kind,
and (`run_demo`) the simulators that bring those devices to life over the real protocols."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from rich.console import Console

from fleet.kinds import DeviceKind
from fleet.models import Device, Market, Vendor
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
    DeviceKind.INSPECTION_TABLET: 1,
    DeviceKind.BROADCAST: 1,
}
#: The demo's devices report this many times faster than real ones, so the dashboard moves at once.
DEMO_SPEED = 5.0


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


async def demo_credentials(platform: Platform) -> list[dict[str, Any]]:
    """Credentials of every demo device. The platform derives device secrets from its master key, so the demo
    (running inside the platform) re-derives them on every start instead of keeping them in a file."""
    rows: list[dict[str, Any]] = []
    devices = await Device.filter(vendor__code=DEMO_VENDOR.code, market_id=DEMO_MARKET.code).order_by("id")
    for device in devices:
        secret = await platform.registry.device_secret(device.id)
        if secret is not None:  # a revoked demo device stays offline, as a real one would
            rows.append({"device_id": device.id, "secret": secret, "kind": str(device.kind),
                         "market": DEMO_MARKET.code, "keepalive_s": device.keepalive_s})  # fmt: skip
    return rows


def _unverified_tls() -> Any:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@contextlib.asynccontextmanager
async def run_demo(platform: Platform, console: Console) -> AsyncIterator[Any]:
    """Seed the demo market and run its simulated devices in this process (MQTT to the embedded broker, CoAP
    with OSCORE, HTTP for the food detector) until the block exits. Outboxes and seq counters live in
    `{data_dir}/demo-outbox.sqlite3`, so a restart goes on where the last run stopped."""
    from simulators import Endpoints, MarketSimulation

    await seed_demo(platform, console)
    settings = platform.settings
    loopback = "127.0.0.1"
    local = (lambda host: loopback if host in ("0.0.0.0", "::", "") else host)  # noqa: E731
    coap = platform.services.get("coap")
    scheme = "https" if settings.tls.enabled else "http"
    endpoints = Endpoints(
        mqtt_host=local(settings.broker.host), mqtt_port=settings.broker.port,
        coap_host=local(settings.coap.host), coap_port=coap.port if coap is not None else settings.coap.port,
        api_url=f"{scheme}://{local(settings.api.host)}:{settings.api.port}",
    )  # fmt: skip
    if settings.tls.enabled:  # the demo talks to its own process over loopback: no need to check the chain
        endpoints.http_verify = False
        if settings.tls.only:
            endpoints.mqtt_port, endpoints.mqtt_tls = settings.tls.mqtt_port, _unverified_tls()
    transports = {} if coap is not None else {DeviceKind.ESL: "mqtt", DeviceKind.ESL_BASE_STATION: "mqtt"}
    sim = MarketSimulation(await demo_credentials(platform), endpoints, transports=transports, speed=DEMO_SPEED,
                           outbox_path=settings.data_dir / "demo-outbox.sqlite3", console=console)  # fmt: skip
    logging.getLogger("simulators").setLevel(logging.WARNING)
    await sim.start()
    console.print(f"demo: {len(sim.devices)} simulated devices running in market {DEMO_MARKET.code}")
    try:
        yield sim
    finally:
        await sim.stop(drain_s=2)
        sim.close()
