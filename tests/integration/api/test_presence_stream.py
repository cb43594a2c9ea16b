"""`GET /events/presence` over a real socket: every dashboard sees exactly its scope, and one that stops reading
is told it missed updates while the others keep receiving everything."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from accounts.models import Role
from accounts.service import UserCreate
from api.dashboard.fanout import fanout_for
from api.dashboard.queries import device_facts
from broker.bus import EnvelopeBus, PresenceChanged
from fleet.models import Vendor
from fleet.schemas import DeviceCreate, MarketCreate, VendorCreate
from marketfleet.platform import Platform
from tests.factories import ADMIN, serve_api, start_test_platform


@dataclass
class Site:
    platform: Platform
    http: httpx.AsyncClient
    devices: dict[str, list[str]]  # market → device ids (env sensors)
    manager_cookie: str

    @property
    def bus(self) -> EnvelopeBus:
        return self.platform.services["bus"]


@pytest.fixture(scope="module")
async def site(registry_url_factory, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    async with start_test_platform(tmp_path_factory.mktemp("presence"), registry_url_factory("sqlite")) as platform:
        registry = platform.registry
        for code in ("FT01", "NS02"):
            await registry.create_market(MarketCreate(code=code, name=code))
        await registry.create_vendor(VendorCreate(code="acme", name="Acme"))
        vendor = await Vendor.get(code="acme")
        devices: dict[str, list[str]] = {}
        for code in ("FT01", "NS02"):
            rows = [DeviceCreate(serial=f"ENV{code}{n:03d}", kind="env_sensor", market=code) for n in range(5)]
            result = await registry.register_devices(vendor, rows)
            devices[code] = [row.device_id for row in result.rows if row.device_id]
        accounts = platform.app.state.ctx.accounts
        await accounts.create_user(UserCreate(username="manny", password="s3cret-passw0rd", role=Role.MANAGER,
                                              markets=["FT01"], language="en"))
        token, _ = await accounts.login("manny", "s3cret-passw0rd")
        async with serve_api(platform.app) as http:
            yield Site(platform, http, devices, token)


def change(device_id: str, market: str | None, online: bool = True) -> PresenceChanged:
    return PresenceChanged(device_id, market, online, "connected" if online else "will", datetime.now(UTC))


async def read_events(response: httpx.Response, until: str) -> list[tuple[str, dict]]:
    """SSE events of a stream up to and including the presence event of device `until`."""
    events: list[tuple[str, dict]] = []
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            events.append((name, data))
            if name == "presence" and data["device_id"] == until:
                return events
    raise AssertionError(f"stream ended before {until}: {events}")


async def wait_for_listeners(site: Site, count: int) -> None:
    fanout = fanout_for(site.bus, device_facts)
    for _ in range(500):
        if len(fanout.listeners) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(fanout.listeners)} dashboards listening, expected {count}")


async def test_each_dashboard_gets_exactly_the_presence_events_of_its_scope(site: Site) -> None:
    ft, ns = site.devices["FT01"], site.devices["NS02"]
    manager = {"Cookie": f"mf_session={site.manager_cookie}"}
    async with site.http.stream("GET", "/events/presence", headers=ADMIN) as everything, \
            site.http.stream("GET", "/events/presence?market=NS02", headers=ADMIN) as one_market, \
            site.http.stream("GET", "/events/presence", headers=manager) as managers:
        for response in (everything, one_market, managers):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
        await wait_for_listeners(site, 3)
        site.bus.publish_many([
            change(ft[0], "FT01"), change("acme-NOSUCH", "FT01"), change(ns[0], "NS02", online=False),
            change(ft[1], "FT01", online=False), change(ns[1], "NS02"),
        ])
        got_all = await read_events(everything, until=ns[1])
        got_ns = await read_events(one_market, until=ns[1])
        got_manager = await read_events(managers, until=ft[1])

    def presence(events: list[tuple[str, dict]]) -> list[tuple[str, bool]]:
        return [(data["device_id"], data["online"]) for name, data in events if name == "presence"]

    assert got_all[0] == ("hello", {"market": None})
    assert presence(got_all) == [(ft[0], True), (ns[0], False), (ft[1], False), (ns[1], True)]  # unknown: not sent
    assert got_ns[0] == ("hello", {"market": "NS02"})
    assert presence(got_ns) == [(ns[0], False), (ns[1], True)]
    assert presence(got_manager) == [(ft[0], True), (ft[1], False)]  # a manager of FT01 never sees NS02
    first = got_all[1][1]
    assert first["kind"] == "env_sensor" and first["market"] == "FT01" and first["reason"] == "connected"
    assert datetime.fromisoformat(first["at"]).tzinfo is not None


async def test_a_dashboard_that_stops_reading_is_told_it_missed_updates_and_holds_up_no_one(site: Site) -> None:
    ft, marker = site.devices["FT01"], site.devices["NS02"][4]
    port = site.http.base_url.port
    # A browser tab that stopped reading: a small receive window, and the test never reads until the end.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.sendall(f"GET /events/presence HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: {ADMIN['Authorization']}\r\n\r\n".encode())
    slow.setblocking(False)
    fanout = fanout_for(site.bus, device_facts)
    try:
        async with site.http.stream("GET", "/events/presence", headers=ADMIN) as fast:
            await wait_for_listeners(site, 2)
            lines = fast.aiter_lines()
            sent = received = 0
            behind = None
            for _ in range(400):  # up to 200,000 events; a few thousand fill the slow socket's buffers
                site.bus.publish_many([change(ft[n % 5], "FT01", online=n % 2 == 0) for n in range(500)])
                sent += 500
                while received < sent:  # the reading dashboard gets every event, however far the other lags
                    line = await asyncio.wait_for(anext(lines), 60)
                    received += line.startswith("event: presence")
                    assert not line.startswith("event: overflow")
                behind = next((lr for lr in fanout.listeners if lr.missed), None)
                if behind is not None:
                    break
            assert behind is not None, "the silent dashboard never fell behind"
            assert behind.pending <= fanout.maxsize  # its queue stays bounded
            # After the loss the stream goes on: a later change still reaches the slow dashboard.
            site.bus.publish(change(marker, "NS02", online=False))
            loop = asyncio.get_running_loop()
            data = b""
            while f'"device_id":"{marker}"'.encode() not in data[-4096:]:
                data += await asyncio.wait_for(loop.sock_recv(slow, 1 << 16), 60)
    finally:
        slow.close()
    text = data.decode()
    assert "event: overflow" in text
    overflow = text[text.index("event: overflow"):].split("\n")[1]
    assert json.loads(overflow.removeprefix("data: "))["dropped"] >= 1
    assert text.count("event: presence") < sent  # it lost events instead of queueing them all


async def test_the_fan_out_lets_go_of_the_bus_when_the_last_dashboard_leaves(site: Site) -> None:
    async with site.http.stream("GET", "/events/presence", headers=ADMIN) as response:
        assert response.status_code == 200
        await wait_for_listeners(site, 1)
        assert "dashboards" in site.bus.dropped()  # one bus subscription for every dashboard
    for _ in range(500):  # the server notices the closed connection on its next write or keep-alive
        if not fanout_for(site.bus, device_facts).listeners:
            break
        site.bus.publish(change(site.devices["FT01"][0], "FT01"))
        await asyncio.sleep(0.02)
    for _ in range(500):
        if "dashboards" not in site.bus.dropped():
            break
        await asyncio.sleep(0.02)
    assert "dashboards" not in site.bus.dropped()
