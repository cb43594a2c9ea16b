"""Crash safety (issue 11): `kill -9` of the platform in the middle of a stream, then a restart, loses nothing
the platform acknowledged and stores nothing twice; the device's own outbox carries the rest over the gap.
A registry that is unreachable at start-up is one clear line after the retries."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from telemetry import SqliteStore
from tests.factories import wait_serving
from tests.integration.broker.device import TestDevice
from tests.services import find_free_port

pytestmark = pytest.mark.timeout(300)
TOKEN = "crash-admin-token"
AFTER_KILL = 1000


def serve(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (home / "serve.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "marketfleet", "serve"], cwd=home, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


async def wait_healthy(base: str, proc: subprocess.Popen[bytes], home: Path) -> None:
    await wait_serving(f"{base}/healthz", proc, lambda: (home / "serve.log").read_text()[-3000:], within_s=90)


async def test_kill_9_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    api_port, mqtt_port = find_free_port(), find_free_port()
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "MF_API__PORT": str(api_port),
           "MF_API__ADMIN_TOKEN": TOKEN, "MF_BROKER__PORT": str(mqtt_port), "MF_COAP__PORT": str(find_free_port())}
    base, admin = f"http://127.0.0.1:{api_port}", {"Authorization": f"Bearer {TOKEN}"}
    proc = serve(tmp_path, env)
    device: TestDevice | None = None
    runner: asyncio.Task[None] | None = None
    try:
        await wait_healthy(base, proc, tmp_path)
        async with httpx.AsyncClient(base_url=base) as api:
            await api.post("/api/v1/admin/markets", json={"code": "M1", "name": "Market"}, headers=admin)
            key = (await api.post("/api/v1/admin/vendors", json={"code": "acme", "name": "Acme"},
                                  headers=admin)).json()["api_key"]
            row = (await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={
                "devices": [{"serial": "S1", "kind": "env_sensor", "market": "M1"}]})).json()["rows"][0]
        device = TestDevice("127.0.0.1", mqtt_port, row["device_id"], row["secret"], "M1", tmp_path / "outbox.db")
        runner = asyncio.create_task(device.run())
        await device.wait_connected()

        produced = 0
        while len(device.acked) < 300:  # stream until the platform has acknowledged a good part of it
            for _ in range(20):
                device.produce({"temperature_c": 20 + produced % 10, "humidity_pct": 60})
                produced += 1
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-stream: messages in flight, a batch perhaps half-written
        proc.wait(timeout=10)
        acked_before_kill = set(device.acked)

        for _ in range(AFTER_KILL):  # the device goes on measuring while the platform is down
            device.produce({"temperature_c": 20 + produced % 10, "humidity_pct": 60})
            produced += 1
        proc = serve(tmp_path, env)
        await wait_healthy(base, proc, tmp_path)
        await device.wait_outbox_empty(within=120)  # reconnected, replayed, everything acknowledged
    finally:
        if device is not None:
            device.stop()
        if runner is not None:
            await runner
        if device is not None:
            device.close()
        proc.terminate()
        proc.wait(timeout=30)

    async with SqliteStore(tmp_path / "var" / "telemetry.sqlite3", retention_interval=None) as store:
        # its telemetry only: the platform also writes the device's presence changes (measurement "presence")
        stored = [r.seq for page in [p async for p in store.export()] for r in page
                  if r.device_id == row["device_id"] and r.measurement == "env_sensor.telemetry"]
    assert len(stored) == produced, f"{len(stored)} readings stored for {produced} messages (duplicates or losses)"
    assert set(stored) == set(range(produced))
    assert acked_before_kill <= set(stored) and len(acked_before_kill) >= 300


def test_unreachable_registry_at_start_up_is_one_clear_line(tmp_path: Path) -> None:
    port = find_free_port()  # nothing listens there
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "var"), "MF_API__PORT": str(find_free_port()),
           "MF_REGISTRY__URL": f"postgres://mf:secret@127.0.0.1:{port}/mf"}
    result = subprocess.run([sys.executable, "-m", "marketfleet", "serve"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "unreachable" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
