"""A scale on RS-232: the simulator's serial transport through the platform's serial gateway over a pty.

Its own module: it starts a platform of its own (with a serial port configured), and the registry is process-wide,
so it must not overlap the module-scoped platform of test_market_on_platform.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from simulators import DropLink, MarketSimulation, register_market_devices
from tests.factories import sent_readings, serve_api, start_test_platform
from tests.integration.simulators.test_market_on_platform import MARKET, TOKEN, endpoints

pytestmark = pytest.mark.timeout(240)


async def until(predicate: Callable[[], bool], within: float = 60.0, what: str = "condition") -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - polls simulator counters, which have no event to await
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not met within {within:g}s") from None


async def test_a_scale_on_rs232_reaches_the_store_through_the_serial_gateway_and_survives_a_pulled_cable(
    tmp_path: Path,
) -> None:
    master, slave = os.openpty()
    scale_id = "simser-SC00001"  # "<vendor code>-<serial>": known before registration, so the port can name it
    try:
        async with start_test_platform(
            tmp_path, f"sqlite://{tmp_path / 'registry.sqlite3'}",
            serial={"ports": [{"url": os.ttyname(slave), "devices": [scale_id], "name": "counter-1"}]},
        ) as platform, serve_api(platform.app) as api:  # fmt: skip
            creds = await register_market_devices(str(api.base_url), TOKEN, {"scale": 1}, market=MARKET,
                                                  vendor_code="simser", serial_prefix="")  # fmt: skip
            assert [c["device_id"] for c in creds] == [scale_id]
            ends = endpoints(platform, api)
            ends.serial_ports[scale_id] = master  # the scale's end of the pty
            sim = MarketSimulation(creds, ends, intervals={"scale": 0.05}, console=Console(quiet=True),
                                   outbox_path=tmp_path / "outbox.sqlite3")  # fmt: skip
            [scale] = sim.devices
            await sim.start()
            try:
                await until(lambda: scale.stats.acked >= 10, 60, "scale frames acknowledged")
                await scale.inject(DropLink(seconds=1.0))
                made = scale.outbox.next_seq
                await until(lambda: scale.outbox.next_seq > made + 10, 30, "readings while unplugged")
                await until(lambda: scale.stats.link_ups >= 2, 30, "plugged in again")
            finally:
                await sim.stop(drain_s=30)
                sim.close()
            assert scale.transport.name == "serial" and scale.pending == 0
            assert platform.store is not None
            assert await sent_readings(platform.store, scale_id) == scale.outbox.next_seq  # each message once
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
