"""OTA through the running platform, as a device sees it: the announcement arrives on `…/down/ota` from the
platform's MQTT broker, the image over HTTP Range, and `ota_status` events go up `…/up/event` into ingest, whose
bus feeds the orchestrator. A platform restart mid-campaign continues where it stopped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker import topics
from firmware.device import ImageDownload
from firmware.models import DeviceJob
from firmware.schemas import ANNOUNCEMENT, InstallAnnouncement
from firmware.signing import generate_keypair
from firmware.verify import ImageRejected
from marketfleet.platform import Platform
from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform
from tests.integration.broker.mqtt_wire import WireClient, WireError
from tests.integration.firmware.conftest import until

pytestmark = pytest.mark.timeout(180)
MARKET = "OTA01"
IMAGE = bytes(range(256)) * 1024
_seq = itertools.count(int(time.time() * 1000))  # one counter for every device: unique and rising


class MqttOtaDevice:
    """Connects to the platform's broker, takes job announcements from `down/ota`, downloads and verifies the
    image, reports `ota_status` on `up/event`. Reports wait in an outbox until acknowledged and are sent again
    after a reconnect (docs/protocol.md). `hold` keeps it at `rebooting` until set."""

    def __init__(self, device_id: str, secret: str, public_key: str, behaviour: str = "ok",
                 hold: asyncio.Event | None = None) -> None:  # fmt: skip
        self.device_id, self.secret, self.public_key = device_id, secret, public_key
        self.behaviour, self.hold = behaviour, hold
        self.jobs: list[str] = []
        self.outbox: dict[int, bytes] = {}
        self.client: WireClient | None = None
        self.task: asyncio.Task[None] | None = None
        self.work: set[asyncio.Task[None]] = set()
        self.subscribed = asyncio.Event()

    def start(self, port: int) -> None:
        self.subscribed.clear()
        self.task = asyncio.create_task(self._run(port))

    async def disconnect(self) -> None:
        """The link drops; jobs under way carry on and queue their reports."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WireError, OSError):
                await self.task

    async def close(self) -> None:
        await self.disconnect()
        for job in list(self.work):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job

    async def _run(self, port: int) -> None:
        client = WireClient()
        try:
            rc = await client.connect("127.0.0.1", port, self.device_id, self.device_id, self.secret, within=5)
            assert rc == 0, f"{self.device_id} refused by the broker ({rc})"
            await client.subscribe([(topics.device_down_filter(MARKET, self.device_id), 1)])
            self.client = client
            for body in list(self.outbox.values()):
                client.publish_nowait(topics.up_topic(MARKET, self.device_id, "event"), body, 1)
            self.subscribed.set()
            while True:
                topic, payload = await client.messages.get()
                if topic.endswith("/down/ack"):
                    for seq in json.loads(payload).get("seqs", []):
                        self.outbox.pop(seq, None)
                elif topic.endswith("/down/ota"):
                    job = asyncio.create_task(self._job(json.loads(payload)))
                    self.work.add(job)
                    job.add_done_callback(self.work.discard)
        finally:
            self.client = None
            await client.abort()

    async def _report(self, job_id: str, state: str, progress: int, **extra: Any) -> None:
        payload = {"type": "ota_status", "job_id": job_id, "state": state, "progress": progress, **extra}
        seq = next(_seq)
        self.outbox[seq] = body = json.dumps({"seq": seq, "payload": payload}).encode()
        if self.client is not None:
            with contextlib.suppress(WireError):
                self.client.publish_nowait(topics.up_topic(MARKET, self.device_id, "event"), body, 1)

    async def _job(self, payload: dict[str, Any]) -> None:
        job = ANNOUNCEMENT.validate_python(payload)
        if not isinstance(job, InstallAnnouncement):
            return
        self.jobs.append(job.job_id)
        await self._report(job.job_id, "downloading", 0)
        key = generate_keypair().public_key if self.behaviour == "wrong_key" else self.public_key
        download = ImageDownload(url=job.image.url, device_id=self.device_id, secret=self.secret,
                                 sha256=job.image.sha256, signature=job.image.signature, public_key=key,
                                 size=job.image.size)  # fmt: skip
        async with httpx.AsyncClient(timeout=30) as http:
            try:
                await download.resume(http)
            except ImageRejected as refused:
                await self._report(job.job_id, "failed", 0, reason=refused.reason)
                return
        for state, progress in (("verifying", 60), ("installing", 80), ("rebooting", 95)):
            await self._report(job.job_id, state, progress)
        if self.hold is not None:
            await self.hold.wait()
        await self._report(job.job_id, "succeeded", 100, version=job.image.version)


async def _start(data_dir: Path, registry_url: str, broker_port: int) -> tuple[Platform, Any]:
    manager = start_test_platform(data_dir, registry_url, broker={"port": broker_port},
                                  firmware={"tick_s": 0.05})  # fmt: skip
    platform = await manager.__aenter__()
    return platform, manager


@contextlib.asynccontextmanager
async def _served(platform: Platform):  # type: ignore[no-untyped-def]
    async with serve_api(platform.app) as api:
        # the test server's port is chosen after start: tell the orchestrator where devices download from
        platform.services["firmware"].orchestrator.config.http_base_url = str(api.base_url).rstrip("/")
        yield api


async def _fleet(api: httpx.AsyncClient, code: str, count: int) -> tuple[dict[str, str], dict[str, str]]:
    await ensure_market(api, MARKET)
    headers = {"X-API-Key": await create_vendor(api, code)}
    assert (await api.post("/api/v1/vendor/models", json={"kind": "env_sensor", "name": "E1"},
                           headers=headers)).status_code == 201  # fmt: skip
    rows = [{"serial": f"S{i:04d}", "kind": "env_sensor", "model": "E1", "market": MARKET,
             "firmware_version": "1.0.0"} for i in range(count)]  # fmt: skip
    response = await api.post("/api/v1/vendor/devices", json={"devices": rows}, headers=headers)
    assert response.status_code == 200, response.text
    upload = await api.post("/api/v1/firmware/images", data={"model": "E1", "version": "2.0.0"},
                            files={"file": ("fw.bin", IMAGE)}, headers=headers)  # fmt: skip
    assert upload.status_code == 201, upload.text
    return {r["device_id"]: r["secret"] for r in response.json()["rows"]}, upload.json()


async def _progress(api: httpx.AsyncClient, campaign_id: int) -> dict[str, Any]:
    return dict((await api.get(f"/api/v1/firmware/campaigns/{campaign_id}", headers=ADMIN)).json())


async def test_a_campaign_runs_over_the_platforms_broker_and_ingest(tmp_path: Path, broker_port: int) -> None:
    platform, manager = await _start(tmp_path / "data", f"sqlite://{tmp_path / 'r.sqlite3'}", broker_port)
    devices: list[MqttOtaDevice] = []
    try:
        async with _served(platform) as api:
            secrets, image = await _fleet(api, "otamqtt", 3)
            key = (await api.get("/api/v1/firmware/signing-key")).json()["public_key"]
            ids = sorted(secrets)
            devices = [MqttOtaDevice(d, secrets[d], key, "wrong_key" if d == ids[0] else "ok") for d in ids]
            for device in devices:
                device.start(broker_port)
                await asyncio.wait_for(device.subscribed.wait(), 10)
            created = await api.post("/api/v1/firmware/campaigns", headers=ADMIN, json={
                "name": "over mqtt", "image_id": image["id"], "waves": [{"name": "all"}], "abort_rules": []})
            assert created.status_code == 201, created.text
            campaign_id = created.json()["id"]

            async def finished() -> dict[str, Any] | None:
                progress = await _progress(api, campaign_id)
                return progress if progress["state"] == "completed" else None

            done = await until(finished, 60, "the campaign to complete over MQTT")
            assert done["counts"]["succeeded"] == 2 and done["failures"]["rejected"] == 1
            refused = await DeviceJob.get(device_id=ids[0], campaign_id=campaign_id)
            assert refused.reason == "bad_signature"
            fleet = (await api.get("/api/v1/admin/devices", params={"q": "otamqtt"}, headers=ADMIN)).json()
            versions = {d["id"]: d["firmware_version"] for d in fleet["items"]}
            assert versions == {ids[0]: "1.0.0", ids[1]: "2.0.0", ids[2]: "2.0.0"}
    finally:
        for device in devices:
            await device.close()
        await manager.__aexit__(None, None, None)


async def test_a_platform_restart_mid_campaign_continues_where_it_was(tmp_path: Path, broker_port: int) -> None:
    data_dir, url = tmp_path / "data", f"sqlite://{tmp_path / 'r.sqlite3'}"
    hold = asyncio.Event()
    platform, manager = await _start(data_dir, url, broker_port)
    devices: list[MqttOtaDevice] = []
    try:
        async with _served(platform) as api:
            secrets, image = await _fleet(api, "otarestart", 6)
            key = (await api.get("/api/v1/firmware/signing-key")).json()["public_key"]
            devices = [MqttOtaDevice(d, s, key, hold=hold) for d, s in sorted(secrets.items())]
            for device in devices:
                device.start(broker_port)
                await asyncio.wait_for(device.subscribed.wait(), 10)
            created = await api.post("/api/v1/firmware/campaigns", headers=ADMIN, json={
                "name": "across a restart", "image_id": image["id"], "abort_rules": [],
                "waves": [{"name": "first", "count": 2, "success_threshold_pct": 100}, {"name": "rest"}]})
            campaign_id = created.json()["id"]

            async def first_wave_rebooting() -> bool:
                return await DeviceJob.filter(campaign_id=campaign_id, state="rebooting").count() == 2

            await until(first_wave_rebooting, 30, "the first wave to reach rebooting")
        for device in devices:
            await device.disconnect()
        await manager.__aexit__(None, None, None)  # the platform goes down mid-wave

        hold.set()  # the first wave finishes installing while it is down; its reports wait in the outboxes
        await asyncio.sleep(0.1)
        assert sum(1 for d in devices for body in d.outbox.values() if b'"succeeded"' in body) == 2
        platform, manager = await _start(data_dir, url, broker_port)
        async with _served(platform) as api:
            for device in devices:
                device.start(broker_port)

            async def finished() -> dict[str, Any] | None:
                progress = await _progress(api, campaign_id)
                return progress if progress["state"] == "completed" else None

            done = await until(finished, 60, "the campaign to complete after the restart")
            assert done["counts"]["succeeded"] == 6
            assert sum(len(d.jobs) for d in devices) == 6  # nobody was announced twice
    finally:
        for device in devices:
            await device.close()
        await manager.__aexit__(None, None, None)


@pytest.fixture
def broker_port() -> int:
    from tests.services import find_free_port

    return find_free_port()
