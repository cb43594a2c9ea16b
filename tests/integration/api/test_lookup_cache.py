"""Cached device lookups (fleet/lookups.py) over real HTTP: a change is seen at once by the process that made it,
by another api process within the cache's TTL, and the cache never widens what a caller may read."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.factories import ADMIN, create_vendor, device_rows, ensure_market, wait_serving
from tests.services import find_free_port

PASSWORD = "correct horse battery"


async def register(api: httpx.AsyncClient, vendor: str, rows: list[dict]) -> list[str]:
    key = await create_vendor(api, vendor)
    response = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return [row["device_id"] for row in response.json()["rows"]]


async def test_a_change_through_the_api_is_served_on_the_next_lookup(platform, api: httpx.AsyncClient) -> None:
    await ensure_market(api, "LC-1")
    [device] = await register(api, "lcache", device_rows(1, prefix="LC", market="LC-1"))
    url = f"/api/v1/admin/devices/{device}"
    first = await api.get(url, headers=ADMIN)
    assert first.status_code == 200 and first.json()["name"] == ""
    hits = platform.registry.lookups.hits
    assert (await api.get(url, headers=ADMIN)).json() == first.json()
    assert platform.registry.lookups.hits == hits + 1  # the second lookup came from the cache

    patched = await api.patch(url, json={"name": "cold room 2", "labels": {"zone": "fish"}}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    after = (await api.get(url, headers=ADMIN)).json()
    assert (after["name"], after["labels"]) == ("cold room 2", {"zone": "fish"})
    assert after == patched.json()

    # Moving the device to another market is a change of scope: also seen at once.
    await ensure_market(api, "LC-2")
    assert (await api.patch(url, json={"market": "LC-2"}, headers=ADMIN)).status_code == 200
    assert (await api.get(url, headers=ADMIN)).json()["market_id"] == "LC-2"
    assert (await api.get("/api/v1/admin/devices/lcache-NOPE", headers=ADMIN)).status_code == 404


async def test_scoping_applies_to_cached_devices(api: httpx.AsyncClient) -> None:
    """A manager of market A never gets a device of market B, even when an admin's lookup has cached it; a
    vendor gets only its own devices from the vendor route's cached lookup."""
    await ensure_market(api, "LC-A")
    await ensure_market(api, "LC-B")
    [in_a] = await register(api, "lcachea", device_rows(1, prefix="A", market="LC-A"))
    [in_b] = await register(api, "lcacheb", device_rows(1, prefix="B", market="LC-B"))
    body = {"username": "lc-manager-a", "password": PASSWORD, "role": "manager", "markets": ["LC-A"]}
    assert (await api.post("/api/v1/users", json=body, headers=ADMIN)).status_code == 201
    login = await api.post("/api/v1/auth/login", json={"username": "lc-manager-a", "password": PASSWORD})
    manager = {"Authorization": f"Bearer {login.json()['token']}"}

    for _ in range(2):  # cached by the admin's lookups, then asked for by the manager
        assert (await api.get(f"/api/v1/admin/devices/{in_b}", headers=ADMIN)).status_code == 200
        assert (await api.get(f"/api/v1/admin/devices/{in_a}", headers=ADMIN)).status_code == 200
    refused = await api.get(f"/api/v1/admin/devices/{in_b}", headers=manager)
    assert refused.status_code == 404 and in_b in refused.json()["detail"]
    # The telemetry routes check scope through the same cached lookup.
    assert (await api.get(f"/api/v1/admin/devices/{in_b}/telemetry", headers=manager)).status_code == 404
    assert (await api.get(f"/api/v1/admin/devices/{in_a}/telemetry", headers=manager)).status_code == 200
    assert (await api.get(f"/api/v1/admin/devices/{in_a}", headers=manager)).json()["id"] == in_a

    # Moving a device out of the manager's market takes it out of their sight at once.
    assert (await api.patch(f"/api/v1/admin/devices/{in_a}", json={"market": "LC-B"}, headers=ADMIN)).is_success
    assert (await api.get(f"/api/v1/admin/devices/{in_a}", headers=manager)).status_code == 404

    key_b = await create_vendor(api, "lcachec")
    assert (await api.get(f"/api/v1/vendor/devices/{in_b}", headers={"X-API-Key": key_b})).status_code == 404


def start_api(home: Path, n: int, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (home / f"api-{n}.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "marketfleet", "serve", "--role", "api"],
                                env={**env, "MF_DATA_DIR": str(home / f"api-{n}"), "MF_API__PORT": str(port)},
                                stdout=out, stderr=subprocess.STDOUT)


async def test_another_api_process_sees_a_change_within_the_ttl(tmp_path: Path) -> None:
    """Two `marketfleet serve --role api` processes on one registry: a change through the first is served by the
    second once its cached copy is older than `api.lookup_cache_ttl_s` (polled, no timing asserted)."""
    token = "lookup-cache-token"
    env = {**os.environ, "MF_SECRET_KEY": "lookup-cache-shared-key", "MF_API__ADMIN_TOKEN": token,
           "MF_REGISTRY__URL": f"sqlite://{tmp_path / 'registry.sqlite3'}", "MF_COAP__ENABLED": "false",
           "MF_API__LOOKUP_CACHE_TTL_S": "1.0"}
    ports = [find_free_port(), find_free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    admin = {"Authorization": f"Bearer {token}"}

    def log() -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("api-*.log")))

    try:
        for n, port in enumerate(ports):  # one after the other: the first migrates the registry
            procs.append(start_api(tmp_path, n, port, env))
            await wait_serving(f"http://127.0.0.1:{port}/healthz", procs[-1], log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=30, headers=admin) as first, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", timeout=30, headers=admin) as second:
            assert (await first.post("/api/v1/admin/markets", json={"code": "LX", "name": "X"})).is_success
            key = (await first.post("/api/v1/admin/vendors", json={"code": "lxco", "name": "X"})).json()["api_key"]
            async with httpx.AsyncClient(timeout=30) as vendor:  # its key alone, not the admin token
                rows = (await vendor.post(f"http://127.0.0.1:{ports[0]}/api/v1/vendor/devices",
                                          headers={"X-API-Key": key},
                                          json={"devices": device_rows(1, prefix="X", market="LX")})).json()["rows"]
            url = f"/api/v1/admin/devices/{rows[0]['device_id']}"
            assert (await second.get(url)).json()["name"] == ""  # now cached by the second process

            assert (await first.patch(url, json={"name": "renamed"})).is_success
            assert (await first.get(url)).json()["name"] == "renamed"  # the process that changed it: at once
            deadline = time.monotonic() + 60  # generous: the TTL is 1 s, the machine may be busy
            while (await second.get(url)).json()["name"] != "renamed":
                assert time.monotonic() < deadline, "the second api process kept serving the old device"
                await asyncio.sleep(0.2)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
