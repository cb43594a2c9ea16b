"""Vision: ONVIF cameras, passenger flow, crowd peaks and market violations as evidence-backed events.

Runs as its own process (`marketfleet vision run`, the `[vision]` extra) and publishes like any device over
MQTT. Stages, each a small module: `onboarding` (WS-Discovery, ONVIF) → `sources` (MJPEG/HTTP/RTSP/file with
reconnect) → `detector` (ultralytics YOLO + ByteTrack) → `analytics` (supervision lines and zones, rules over
time) → `evidence` → `service` (tables in `store`/`models`, MQTT in `publisher`). `simulator` and `scenes` make
a camera and its pictures for tests; `training` trains models. Heavy imports (torch, ultralytics) happen only
in `detector` and `training`.
"""
