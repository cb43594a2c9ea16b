"""`VisionService`: the `marketfleet vision run` process — one worker and one MQTT device link per camera.

It reads the cameras from the vision tables (re-reading every `reload_s`, so a changed analytics
configuration or a newly onboarded camera is picked up without a restart), gets each camera's device secret
from the caller (`secret_for`, the registry in the composition root), and writes what the workers find to the
tables and to MQTT: events with evidence, per-minute passenger flow, telemetry, faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vision.analytics import Finding
from vision.config import CameraAnalytics, VisionSettings
from vision.detector import YoloDetector
from vision.models import VisionCamera
from vision.publisher import DeviceLink
from vision.store import VisionStore
from vision.worker import CameraSpec, CameraStats, CameraWorker

log = logging.getLogger(__name__)

SecretLookup = Callable[[str], Awaitable[str | None]]


@dataclass
class _Running:
    worker: CameraWorker
    link: DeviceLink
    stamp: str  # what the camera was started with (a change restarts it)
    counters: list[DeviceLink]  # flow_counter devices publishing this camera's lines


def _stamp(camera: VisionCamera) -> str:
    return json.dumps([camera.stream_uri, camera.market, camera.analytics], sort_keys=True, default=str)


class PlatformSink:
    """The vision tables plus each camera's MQTT link."""

    def __init__(self, store: VisionStore, links: dict[str, DeviceLink], evidence_dir: Path) -> None:
        self.store, self.links, self.evidence_dir = store, links, evidence_dir
        self._flow_sent: dict[str, float] = {}

    async def finding(self, camera: CameraSpec, finding: Finding, evidence_jpeg: bytes) -> None:
        event = await self.store.record_event(
            camera=camera.device_id, market=camera.market, category=finding.category, zone=finding.zone,
            track_id=finding.track_id, count=finding.count, confidence=round(finding.confidence, 3),
            detail=finding.detail[:500],
        )
        if evidence_jpeg:
            path = self.evidence_dir / camera.device_id / f"{event.id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(path.write_bytes, evidence_jpeg)
            await self.store.set_evidence(event, str(path.resolve()))
        payload = {"type": "detection", "category": finding.category, "zone": finding.zone,
                   "count": finding.count, "confidence": round(min(1.0, max(0.0, finding.confidence)), 3),
                   "evidence_url": f"/api/v1/vision/events/{event.id}/evidence",
                   "event_id": event.id, "track_id": finding.track_id}
        await self._send(camera, "event", payload)

    async def counts(self, camera: CameraSpec, minute: datetime, counts: dict[str, tuple[int, int]]) -> None:
        await self.store.add_counts(camera.device_id, minute, counts)
        now = time.monotonic()
        for line in camera.analytics.lines:
            link = self.links.get(line.flow_device or "")
            if link is None or line.name not in counts:
                continue
            count_in, count_out = counts[line.name]
            since = self._flow_sent.get(link.device_id, now - 60)
            self._flow_sent[link.device_id] = now
            # FlowTelemetry: counts since the previous report of this counter
            await link.send("telemetry", {"entrance": line.name, "count_in": count_in, "count_out": count_out,
                                          "period_s": max(1, min(3600, round(now - since)))})

    async def telemetry(self, camera: CameraSpec, stats: CameraStats, processed_fps: float,
                        skipped_fps: float) -> None:
        await self._send(camera, "telemetry", {
            "fps": round(min(240.0, processed_fps), 2), "people_in_view": stats.people_in_view,
            "inference_ms": round(stats.inference_ms, 1), "skipped_fps": round(skipped_fps, 2),
            "bad_frames": stats.bad_frames,
        })

    async def fault(self, camera: CameraSpec, code: str, message: str) -> None:
        log.warning("camera %s: %s: %s", camera.device_id, code, message)
        await self._send(camera, "event", {"type": "fault", "code": code, "message": message[:500]})

    async def _send(self, camera: CameraSpec, channel: str, payload: dict[str, Any]) -> None:
        link = self.links.get(camera.device_id)
        if link is not None:
            await link.send(channel, {k: v for k, v in payload.items() if v is not None})


class VisionService:
    def __init__(self, settings: VisionSettings, *, data_dir: Path, mqtt_host: str, mqtt_port: int,
                 secret_for: SecretLookup, store: VisionStore | None = None,
                 detector: YoloDetector | None = None, keepalive_s: int = 60) -> None:
        self.settings, self.data_dir = settings, data_dir
        self.mqtt_host, self.mqtt_port, self.keepalive_s = mqtt_host, mqtt_port, keepalive_s
        self.secret_for = secret_for
        self.store = store or VisionStore(settings.flow_retention_days)
        self.detector = detector
        self.ppe_detector: YoloDetector | None = None
        self.executor = ThreadPoolExecutor(max_workers=self.settings.inference_workers,
                                           thread_name_prefix="inference")
        self.links: dict[str, DeviceLink] = {}
        self.sink = PlatformSink(self.store, self.links, data_dir / "vision" / "evidence")
        self.running: dict[str, _Running] = {}
        self.problems: dict[str, str] = {}  # camera → why it is not running (bad config, no credential)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.detector is None:
            self.detector = YoloDetector(self.settings.model_path, image_size=self.settings.image_size,
                                         device=self.settings.device, threads=self.settings.threads,
                                         backend=self.settings.backend, workers=self.settings.inference_workers)
        if self.settings.ppe_model_path:
            self.ppe_detector = YoloDetector(self.settings.ppe_model_path, image_size=self.settings.image_size,
                                             device=self.settings.device, threads=self.settings.threads,
                                             backend=self.settings.backend, workers=self.settings.inference_workers)
        await self.store.purge()
        await self.reconcile()
        self._task = asyncio.create_task(self._reload_forever(), name="vision-reload")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for device_id in list(self.running):
            await self._stop(device_id)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _reload_forever(self) -> None:
        purged_at = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.settings.reload_s)
            try:
                await self.reconcile()
                if asyncio.get_running_loop().time() - purged_at > 3600:
                    purged_at = asyncio.get_running_loop().time()
                    await self.store.purge()
            except Exception:
                log.exception("vision: reloading the camera configuration failed; keeping the running one")

    async def reconcile(self) -> None:
        """Start cameras that are new or changed, stop those removed or disabled."""
        cameras = {c.device_id: c for c in await VisionCamera.filter(enabled=True)}
        for device_id in [d for d in self.running if d not in cameras]:
            await self._stop(device_id)
        for device_id, camera in cameras.items():
            current = self.running.get(device_id)
            if current is not None and current.stamp == _stamp(camera):
                continue
            if current is not None:
                await self._stop(device_id)
            await self._start(camera)

    async def _start(self, camera: VisionCamera) -> None:
        try:
            analytics = CameraAnalytics.model_validate(camera.analytics or {})
        except ValidationError as err:
            self.problems[camera.device_id] = f"analytics configuration invalid: {err.errors()[0]['msg']}"
            log.error("camera %s: %s", camera.device_id, self.problems[camera.device_id])
            return
        secret = await self.secret_for(camera.device_id)
        if secret is None:
            self.problems[camera.device_id] = "no active device credential (revoked, or not registered)"
            log.error("camera %s: %s", camera.device_id, self.problems[camera.device_id])
            return
        self.problems.pop(camera.device_id, None)
        spec = CameraSpec(camera.device_id, camera.market, camera.stream_uri, analytics)
        link = self._link(camera.device_id, secret, camera.market)
        counters = []
        for line in analytics.lines:
            if line.flow_device and line.flow_device not in self.links:
                counter_secret = await self.secret_for(line.flow_device)
                if counter_secret is None:
                    self.problems[camera.device_id] = f"line {line.name!r}: flow device {line.flow_device} has " \
                        "no active credential; its counts stay in the flow API only"
                    log.error("camera %s: %s", camera.device_id, self.problems[camera.device_id])
                    continue
                counters.append(self._link(line.flow_device, counter_secret, camera.market))
        assert self.detector is not None
        worker = CameraWorker(spec, self.detector, self.sink, self.executor, ppe_detector=self.ppe_detector,
                              telemetry_interval_s=self.settings.telemetry_interval_s,
                              reconnect_max_s=self.settings.reconnect_max_s)
        worker.start()
        self.running[camera.device_id] = _Running(worker, link, _stamp(camera), counters)
        state = {"stream_url": camera.stream_uri, "snapshot_url": camera.snapshot_uri}
        await link.send("state", {k: v for k, v in state.items() if v})

    def _link(self, device_id: str, secret: str, market: str | None) -> DeviceLink:
        link = DeviceLink(host=self.mqtt_host, port=self.mqtt_port, device_id=device_id, secret=secret,
                          market=market, seq_file=self.data_dir / "vision" / "seq" / device_id,
                          keepalive_s=self.keepalive_s)
        self.links[device_id] = link
        link.start()
        return link

    async def _stop(self, device_id: str) -> None:
        running = self.running.pop(device_id, None)
        if running is None:
            return
        await running.worker.aclose()
        for link in (running.link, *running.counters):
            await link.aclose()
            self.links.pop(link.device_id, None)
