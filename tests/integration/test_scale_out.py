"""Scale-out (issue 11): 2 api + 2 ingest + 1 scheduler processes (`marketfleet serve --role …`) against one
Mosquitto (dynamic security), PostgreSQL and InfluxDB on this machine. Devices registered through either api
process connect to Mosquitto at once; every message is stored exactly once although two ingest workers share
the subscription; both api processes see the same fleet."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from telemetry import InfluxStore
from tests.factories import wait_serving
from tests.integration.broker.device import TestDevice
from tests.services import InfluxServer, MosquittoServer, PostgresServer, find_free_port

pytestmark = pytest.mark.timeout(420)
TOKEN = "scale-out-admin-token"
DEVICES, MESSAGES = 12, 150


def logs(home: Path, pattern: str = "*.log") -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(home.glob(pattern)))


def start(role: str, home: Path, env: dict[str, str], **extra: str) -> subprocess.Popen[bytes]:
    name = f"{role}-{len(list(home.glob(role + '-*.log')))}"
    log = (home / f"{name}.log").open("ab")
    # Each process has a data directory of its own (as on separate machines); the master key is shared.
    return subprocess.Popen([sys.executable, "-m", "marketfleet", "serve", "--role", role], cwd=home,
                            env={**env, "MF_DATA_DIR": str(home / name), **extra}, stdout=log,
                            stderr=subprocess.STDOUT)


async def healthy(port: int, proc: subprocess.Popen[bytes], home: Path) -> None:
    await wait_serving(f"http://127.0.0.1:{port}/healthz", proc, lambda: logs(home))


async def test_two_api_two_ingest_one_scheduler_store_each_reading_once(
    tmp_path: Path, postgres_server: PostgresServer, influx_server: InfluxServer, mosquitto_server: MosquittoServer,
) -> None:
    database = f"scale_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ, "MF_SECRET_KEY": "scale-out-shared-master-key",
        "MF_API__ADMIN_TOKEN": TOKEN,
        "MF_REGISTRY__URL": postgres_server.create_database(f"mf_scale_{uuid.uuid4().hex[:8]}"),
        "MF_TELEMETRY__BACKEND": "influxdb", "MF_TELEMETRY__URL": influx_server.url,
        "MF_TELEMETRY__DATABASE": database,
        "MF_BROKER__MODE": "external", "MF_BROKER__HOST": mosquitto_server.host,
        "MF_BROKER__PORT": str(mosquitto_server.port), "MF_BROKER__USERNAME": "mf-scale-platform",
        "MF_BROKER__ADMIN_USERNAME": mosquitto_server.admin_username,
        "MF_BROKER__ADMIN_PASSWORD": mosquitto_server.admin_password,
        "MF_COAP__ENABLED": "false",
    }
    api_ports = [find_free_port(), find_free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    devices: list[TestDevice] = []
    runners: list[asyncio.Task[None]] = []
    try:
        # The first process migrates the registry; the others start on a migrated one.
        procs.append(start("api", tmp_path, env, MF_API__PORT=str(api_ports[0])))
        await healthy(api_ports[0], procs[0], tmp_path)
        procs.append(start("api", tmp_path, env, MF_API__PORT=str(api_ports[1])))
        procs += [start("ingest", tmp_path, env), start("ingest", tmp_path, env), start("scheduler", tmp_path, env)]
        await healthy(api_ports[1], procs[1], tmp_path)

        admin = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_ports[1]}", timeout=30) as api:
            assert (await api.post("/api/v1/admin/markets", json={"code": "M1", "name": "M"}, headers=admin)).is_success
            key = (await api.post("/api/v1/admin/vendors", json={"code": "scaleco", "name": "S"},
                                  headers=admin)).json()["api_key"]
            rows = (await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={"devices": [
                {"serial": f"S{n:03d}", "kind": "env_sensor", "market": "M1"} for n in range(DEVICES)]})).json()["rows"]
        for process in procs[2:]:
            assert process.poll() is None, logs(tmp_path)

        for n, row in enumerate(rows):
            device = TestDevice(mosquitto_server.host, mosquitto_server.port, row["device_id"], row["secret"], "M1",
                                tmp_path / f"outbox-{n}.db")
            devices.append(device)
            runners.append(asyncio.create_task(device.run()))
        await asyncio.gather(*(d.wait_connected(within=30) for d in devices))
        for i in range(MESSAGES):
            for device in devices:
                device.produce({"temperature_c": 4 + i % 5, "humidity_pct": 80})
            if i % 25 == 0:
                await asyncio.sleep(0.05)
        await asyncio.gather(*(d.wait_outbox_empty(within=180) for d in devices))

        async with httpx.AsyncClient(timeout=30) as client:
            for port in api_ports:  # both api processes serve the one registry
                listing = await client.get(f"http://127.0.0.1:{port}/api/v1/admin/devices", params={"q": "scaleco"},
                                           headers=admin)
                assert listing.json()["total"] == DEVICES
    finally:
        for device in devices:
            device.stop()
        for runner in runners:
            await runner
        for device in devices:
            device.close()
        for process in procs:
            process.terminate()
        for process in procs:
            process.wait(timeout=30)

    async with InfluxStore(influx_server.url, database, spool_dir=None) as store:
        readings = [r for page in [p async for p in store.export()] for r in page]
    for row in rows:
        seqs = sorted(r.seq for r in readings  # telemetry only: presence changes are stored as readings too
                      if r.device_id == row["device_id"] and r.measurement == "env_sensor.telemetry")
        assert seqs == list(range(MESSAGES)), f"{row['device_id']}: {len(seqs)} stored"
    assert "Traceback" not in logs(tmp_path, "ingest-*.log"), logs(tmp_path, "ingest-*.log")
