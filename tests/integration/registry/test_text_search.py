"""Fleet text search on SQLite and PostgreSQL: served by the index of migration 0003 (FTS5 trigram, pg_trgm),
answering exactly what the plain substring condition answers, through registrations, renames and deletes, and
built from the devices already there when an existing registry is upgraded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tortoise import Tortoise
from tortoise.migrations.api import migrate
from tortoise.transactions import in_transaction

from fleet.models import Credential, Device, Market, Vendor
from fleet.registry import Registry
from fleet.schemas import DeviceCreate, DeviceFilter, DeviceUpdate, MarketCreate, VendorCreate
from fleet.search import rebuild, search, substring_condition
from marketfleet import db

NAMES = [
    "Entrance North scale", "entrance south", "冷柜 北门 2号", "Cold locker 冷柜", "50% off_shelf", "it's \"quoted\"",
    "Café Ünïcode", "CAFÉ upper", "", "ab", "abc", "xABCx", "tab\tname", "a?c back\\slash n:1 ^edge *star*",
]
QUERIES = [
    "entrance", "ENTRANCE", "Entr", "north", "冷柜", "北门 2", "50%", "%", "_", "off_", "'", '"quoted"', "it's",
    "é", "É", "café", "ab", "a", "abc", "ABC", "SRCH0000", "srch00001", "-SRCH", "zzz-none", "tab\tna", " ",
    "0001", "scale", "?", "a?c", "\\", "back\\slash", '"""', "*", "ab*", "n:", "-", "^e",
]


async def every_id(registry: Registry, q: str) -> list[str]:
    total, items = await registry.list_devices(DeviceFilter(q=q), limit=1000)
    assert total == len(items)
    return [d.id for d in items]


async def substring_ids(q: str) -> list[str]:
    """The old meaning: the plain condition, no index."""
    return [d.id for d in await Device.filter(substring_condition(q)).order_by("id")]


async def assert_same_as_substring(registry: Registry) -> None:
    for q in QUERIES:
        assert await every_id(registry, q) == await substring_ids(q), q


async def index_in_place(backend: str) -> bool:
    connection = Tortoise.get_connection("default")
    if backend == "sqlite":
        rows = await connection.execute_query_dict("SELECT name FROM sqlite_master WHERE name = 'device_search'")
    else:
        rows = await connection.execute_query_dict(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'device' AND indexname = 'device_search_trgm'")
    return len(rows) == 1


@pytest.fixture(params=["sqlite", "postgres"])
async def registry(request: pytest.FixtureRequest, registry_url_factory) -> AsyncIterator[tuple[str, Registry]]:
    backend = request.param
    await db.connect(registry_url_factory(backend))
    try:
        reg = Registry(master_key=b"k" * 32)
        await reg.create_market(MarketCreate(code="SR01", name="Search market"))
        await reg.create_vendor(VendorCreate(code="srch", name="Search vendor"))
        vendor = await Vendor.get(code="srch")
        rows = [DeviceCreate(serial=f"SRCH{n:05d}", kind="env_sensor", market="SR01", name=name)
                for n, name in enumerate(NAMES * 3)]
        result = await reg.register_devices(vendor, rows)
        assert not [r for r in result.rows if r.error]
        yield backend, reg
    finally:
        await db.close()


async def test_search_answers_exactly_what_the_substring_condition_answers(registry) -> None:
    backend, reg = registry
    assert await index_in_place(backend)
    await assert_same_as_substring(reg)
    # A few answers spelled out, so the comparison above is not between two empty lists.
    assert len(await every_id(reg, "ENTRANCE")) == 6
    assert len(await every_id(reg, "冷柜")) == 6
    assert len(await every_id(reg, "50%")) == 3 and await every_id(reg, "%") == await every_id(reg, "50%")
    assert len(await every_id(reg, "srch0001")) == 10  # SRCH00010 … SRCH00019
    assert await every_id(reg, "zzz-none") == []
    # Search combines with the other filters and pages as before.
    total, page = await reg.list_devices(DeviceFilter(q="srch", kind="env_sensor", market="SR01"), limit=5,
                                         offset=5)
    assert total == len(NAMES) * 3 and [d.serial for d in page] == [f"SRCH{n:05d}" for n in range(5, 10)]


async def test_the_index_serves_the_search(registry) -> None:
    backend, _ = registry
    query = await search(Device.all(), "entrance")
    connection = Tortoise.get_connection("default")
    if backend == "sqlite":
        sql = query.order_by("id").limit(50).sql(params_inline=True)
        plan = str(await connection.execute_query_dict("EXPLAIN QUERY PLAN " + sql))
        assert "VIRTUAL TABLE INDEX" in plan and "device_search" in plan, plan
    else:
        async with in_transaction() as tx:  # a tiny table is cheapest to scan: ask for the plan without scans
            await tx.execute_script("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
            plan = str(await tx.execute_query_dict("EXPLAIN " + query.count().sql(params_inline=True)))
        assert "device_search_trgm" in plan, plan


async def test_renames_registrations_and_deletes_reach_the_index(registry) -> None:
    _, reg = registry
    target = (await every_id(reg, "entrance north"))[0]
    await reg.update_device(target, DeviceUpdate(name="Fish stall thermometer"))
    assert target not in await every_id(reg, "entrance north")
    assert await every_id(reg, "fish stall") == [target]
    # Presence and status updates leave the name alone and the device findable.
    await Device.filter(id=target).update(online=True, firmware_version="2.0.1")
    assert await every_id(reg, "fish stall") == [target]

    vendor = await Vendor.get(code="srch")
    result = await reg.register_devices(vendor, [DeviceCreate(serial="LATE00001", kind="scale", name="Late arrival")])
    late = result.rows[0].device_id
    assert await every_id(reg, "late arr") == [late]

    await Credential.filter(device_id=late).delete()
    await Device.filter(id=late).delete()
    assert await every_id(reg, "late arr") == []
    await assert_same_as_substring(reg)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_upgrading_an_existing_registry_keeps_its_devices_and_indexes_them(backend, registry_url_factory) -> None:
    url = registry_url_factory(backend)
    await db.upgrade(url)
    # Take the registry back to before the search index, as a registry of the previous release is.
    await migrate(config=db.tortoise_config(url), target="models.0002_kinds_tablet_broadcast")
    await Tortoise.close_connections()
    await Tortoise.init(config=db.tortoise_config(url))
    try:
        assert not await index_in_place(backend)
        market = await Market.create(code="UP01", name="Upgrade market")
        vendor = await Vendor.create(code="old", name="Old vendor", api_key_prefix="oldkey", api_key_hash="x")
        for n in range(30):
            await Device.create(id=f"old-UP{n:05d}", serial=f"UP{n:05d}", vendor=vendor, kind="scale",
                                market=market, name=f"Stall {n} scale")
    finally:
        await db.close()
    await db.connect(url)  # start-up applies pending migrations, as `marketfleet db upgrade` does
    try:
        assert await index_in_place(backend)
        reg = Registry(master_key=b"k" * 32)
        assert await Device.all().count() == 30
        assert await every_id(reg, "stall 1 ") == ["old-UP00001"]
        assert len(await every_id(reg, "up0001")) == 10
        await assert_same_as_substring(reg)
    finally:
        await db.close()


async def test_reindex_repairs_a_stale_index(registry) -> None:
    backend, reg = registry
    if backend == "postgres":
        assert await rebuild() is False  # the GIN index follows the table: nothing to rebuild
        await assert_same_as_substring(reg)
        return
    # An index that lost its entries (as after a restore that bypassed the triggers, or a VACUUM that moved
    # rowids on an older SQLite) finds nothing, although the devices are there.
    connection = Tortoise.get_connection("default")
    await connection.execute_script("INSERT INTO device_search(device_search) VALUES ('delete-all')")
    assert await every_id(reg, "ENTRANCE") == []
    assert await rebuild() is True
    await assert_same_as_substring(reg)
    assert len(await every_id(reg, "ENTRANCE")) == 6
