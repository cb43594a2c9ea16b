"""One camera's pipeline: frame source → sampling → detector → ByteTrack → analytics → sink.

The stages are joined by a one-frame slot (sources.FrameSlot): the detector samples at the camera's
`sample_fps` and frames that arrive in between are skipped and counted. Inference runs in the worker's single
inference thread, shared by all cameras, so cameras queue for the CPU rather than oversubscribing it. Whatever
goes wrong with one frame (not an image, detector error) is reported and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from vision.analytics import CameraAnalyticsEngine, Finding, FrameResult
from vision.config import CameraAnalytics
from vision.detector import Tracker, YoloDetector
from vision.evidence import render_evidence
from vision.sources import Frame, FrameSlot, FrameSource, decode
from vision.store import minute_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraSpec:
    device_id: str
    market: str | None
    stream_uri: str
    analytics: CameraAnalytics


@dataclass
class CameraStats:
    """What an operator needs to see a camera falling behind (sent as the camera's telemetry)."""

    processed: int = 0
    skipped: int = 0
    bad_frames: int = 0
    errors: int = 0
    inference_ms: float = 0.0  # moving average
    people_in_view: int = 0
    connected: bool = False
    window_start: float = field(default_factory=time.monotonic)
    window_processed: int = 0
    window_skipped: int = 0

    def take_rates(self) -> tuple[float, float]:
        """(processed, skipped) frames per second since the previous call."""
        now = time.monotonic()
        elapsed = max(1e-6, now - self.window_start)
        rates = (self.processed - self.window_processed) / elapsed, (self.skipped - self.window_skipped) / elapsed
        self.window_start, self.window_processed, self.window_skipped = now, self.processed, self.skipped
        return rates


class VisionSink(Protocol):
    """Where a worker's output goes (the platform: the vision tables and the camera's MQTT link)."""

    async def finding(self, camera: CameraSpec, finding: Finding, evidence_jpeg: bytes) -> None: ...

    async def counts(self, camera: CameraSpec, minute: datetime, counts: dict[str, tuple[int, int]]) -> None: ...

    async def telemetry(self, camera: CameraSpec, stats: CameraStats, processed_fps: float,
                        skipped_fps: float) -> None: ...

    async def fault(self, camera: CameraSpec, code: str, message: str) -> None: ...


class CameraWorker:
    def __init__(self, spec: CameraSpec, detector: YoloDetector, sink: VisionSink, executor: Executor, *,
                 ppe_detector: YoloDetector | None = None, telemetry_interval_s: float = 10.0,
                 reconnect_max_s: float = 30.0, counts_flush_s: float = 2.0) -> None:
        self.spec, self.detector, self.sink, self.executor = spec, detector, sink, executor
        self.ppe_detector = ppe_detector if any(z.ppe for z in spec.analytics.zones) else None
        self.telemetry_interval_s, self.counts_flush_s = telemetry_interval_s, counts_flush_s
        self.slot = FrameSlot()
        self.source = FrameSource(spec.stream_uri, self.slot, on_state=self._on_state,
                                  reconnect_max_s=reconnect_max_s)
        self.tracker = Tracker(spec.analytics.sample_fps, detector.names)
        self.engine = CameraAnalyticsEngine(spec.analytics)
        self.stats = CameraStats()
        self._pending: dict[datetime, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        self._notes: list[tuple[str, str]] = []
        self._reduce = 1
        self._tasks: list[asyncio.Task[Any]] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self.source.run(), name=f"source-{self.spec.device_id}"),
                       asyncio.create_task(self._process(), name=f"worker-{self.spec.device_id}")]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._flush_counts()

    def _on_state(self, state: str, detail: str) -> None:
        self.stats.connected = state == "connected"
        if state == "lost":
            self._notes.append(("stream_lost", f"stream {self.spec.stream_uri} lost: {detail}"))
        elif self.source.connects > 1:
            self._notes.append(("stream_reconnected", f"stream {self.spec.stream_uri} reconnected"))

    # ------------------------------------------------------------ the loop

    async def _process(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1 / self.spec.analytics.sample_fps
        last_flush = last_telemetry = loop.time()
        while True:
            frame = await self.slot.wait(interval * 4)
            started = loop.time()
            while self._notes:
                code, message = self._notes.pop(0)
                await self._safe(self.sink.fault(self.spec, code, message))
            if frame is not None:
                self.stats.skipped = self.slot.skipped
                await self._one_frame(frame)
            now = loop.time()
            if now - last_flush >= self.counts_flush_s:
                last_flush = now
                await self._safe(self._flush_counts())
            if now - last_telemetry >= self.telemetry_interval_s:
                last_telemetry = now
                processed_fps, skipped_fps = self.stats.take_rates()
                await self._safe(self.sink.telemetry(self.spec, self.stats, processed_fps, skipped_fps))
            # Sample: sleep out the rest of the interval; frames arriving meanwhile replace each other.
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    def decode(self, frame: Frame) -> np.ndarray | None:
        """Decode, at the smallest JPEG scale that still covers the detector's input size (learnt from the
        first frame): decoding a 1080p frame costs a third of a 320 px inference, and the detector would
        shrink it anyway. Analytics work in frame fractions, so the scale does not change them."""
        image = decode(frame, self._reduce)
        if image is not None and self._reduce == 1 and isinstance(frame.data, bytes):
            width = image.shape[1]
            self._reduce = 4 if width // 4 >= self.detector.image_size else 2 if width // 2 >= \
                self.detector.image_size else 1
            if self._reduce > 1:  # every frame the tracker sees has the same scale, this one included
                image = decode(frame, self._reduce)
        return image

    async def _one_frame(self, frame: Frame) -> None:
        image = self.decode(frame)
        if image is None:
            self.stats.bad_frames += 1
            if self.stats.bad_frames == 1 or self.stats.bad_frames % 100 == 0:
                await self._safe(self.sink.fault(
                    self.spec, "bad_frame", f"{self.stats.bad_frames} frame(s) from {self.spec.stream_uri} were "
                    "not decodable images; skipped"))
            return
        try:
            result = await self.analyse(image, time.monotonic())
        except Exception as err:  # one bad frame must not stop the camera
            self.stats.errors += 1
            log.exception("camera %s: frame failed", self.spec.device_id)
            if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                await self._safe(self.sink.fault(self.spec, "analysis_error", f"{type(err).__name__}: {err}"))
            return
        minute = minute_of(datetime.now(UTC))
        for line, (count_in, count_out) in result.crossings.items():
            if count_in or count_out:
                self._pending[minute][line][0] += count_in
                self._pending[minute][line][1] += count_out

    async def analyse(self, image: np.ndarray, t: float) -> FrameResult:
        """Detector, tracker and analytics on one decoded frame; findings go to the sink with evidence."""
        loop = asyncio.get_running_loop()
        config = self.spec.analytics
        began = time.perf_counter()
        _, boxes = await loop.run_in_executor(
            self.executor, lambda: self.detector.detect(image, confidence=config.confidence, classes=config.classes))
        ppe = None
        if self.ppe_detector is not None:
            ppe, _ = await loop.run_in_executor(self.executor, lambda: self.ppe_detector.detect(image))  # type: ignore[union-attr]
        elapsed_ms = (time.perf_counter() - began) * 1000
        self.stats.inference_ms = elapsed_ms if self.stats.processed == 0 else \
            0.8 * self.stats.inference_ms + 0.2 * elapsed_ms
        tracked = self.tracker.update(boxes, image)
        height, width = image.shape[:2]
        result = self.engine.update(tracked, t, (width, height), ppe=ppe)
        self.stats.processed += 1
        self.stats.people_in_view = result.people
        for finding in result.findings:
            evidence = render_evidence(image, tracked, finding, config, result)
            await self._safe(self.sink.finding(self.spec, finding, evidence))
        return result

    async def _flush_counts(self) -> None:
        pending, self._pending = self._pending, defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for minute, lines in sorted(pending.items()):
            await self.sink.counts(self.spec, minute, {name: (v[0], v[1]) for name, v in lines.items()})

    async def _safe(self, coro: Any) -> None:
        try:
            await coro
        except Exception:  # the sink's trouble (database, broker) is logged; the camera keeps running
            log.exception("camera %s: sink failed", self.spec.device_id)
