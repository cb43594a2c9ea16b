"""A registry database with one market, two stalls, labels, base stations and scales, and a RetailService
talking to them through `radio.Floor`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from fleet.registry import Registry
from fleet.schemas import DeviceCreate, MarketCreate, StallCreate, VendorCreate
from marketfleet import db
from retail.service import RetailService
from tests.integration.retail.radio import Floor, ManualClock

MARKET = "SZ-FT-001"


@dataclass
class Retail:
    service: RetailService
    floor: Floor
    clock: ManualClock
    registry: Registry


@pytest.fixture(scope="module")
async def registry_db(registry_url_factory) -> AsyncIterator[Registry]:
    await db.connect(registry_url_factory("sqlite"))
    registry = Registry(master_key=b"k" * 32)
    await registry.create_market(MarketCreate(code=MARKET, name="福田智慧农贸市场"))
    for number, holder in (("A03", "王记蔬菜"), ("B07", "李记肉铺")):
        await registry.create_stall(MARKET, StallCreate(number=number, holder_name=holder))
    vendor, _ = await registry.create_vendor(VendorCreate(code="tv", name="test devices"))
    rows = [DeviceCreate(serial=f"EL{n:04d}", kind="esl", market=MARKET, stall="A03") for n in range(20)]
    rows += [DeviceCreate(serial=f"BS{n:02d}", kind="esl_base_station", market=MARKET) for n in range(3)]
    rows += [DeviceCreate(serial=f"SC{n:02d}", kind="scale", market=MARKET, stall="A03") for n in range(3)]
    rows += [DeviceCreate(serial="SC99", kind="scale", market=MARKET, stall="B07")]
    await registry.register_devices(vendor, rows)
    yield registry
    await db.close()


@pytest.fixture
async def retail(registry_db: Registry) -> AsyncIterator[Retail]:
    clock = ManualClock()
    floor = Floor(clock)
    for scale in ("tv-SC00", "tv-SC01", "tv-SC02", "tv-SC99"):
        floor.add_scale(scale)
    floor.stations |= {"tv-BS00", "tv-BS01", "tv-BS02"}
    service = RetailService(floor, clock)
    floor.service = service
    yield Retail(service, floor, clock, registry_db)
    await service.aclose()
