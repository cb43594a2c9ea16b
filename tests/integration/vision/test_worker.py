"""The vision worker end to end: simulated ONVIF cameras → MJPEG → tiny YOLO + ByteTrack → analytics → the
platform (vision tables, and MQTT through the platform's own broker, acknowledged like any device's messages).

Four cameras run at once, as in a market: an entrance (exact in/out counts), a crowded hall (one peak event with
evidence), an escalator walked the right way and one walked the wrong way (this one streams RTSP, the others
MJPEG)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform
from vision.config import VisionSettings
from vision.models import VisionCamera
from vision.scenes import Scene, Walker, crowd_scene, entrance_scene
from vision.service import VisionService
from vision.simulator import CameraSimulator

# The first test to use the detector trains the tiny model when no cached one exists (about a minute on two
# idle cores, several on a loaded machine): its setup is counted in that test's time.
pytestmark = pytest.mark.timeout(900)

FULL = [[0, 0], [1, 0], [1, 1], [0, 1]]
GATE = {"sample_fps": 5, "lines": [{"name": "gate", "start": [1, 0.5], "end": [0, 0.5], "flow_device": "hik-FLOW01"}]}
HALL = {"sample_fps": 4, "zones": [{"name": "hall", "polygon": FULL, "crowd_limit": 3, "crowd_hold_s": 2}]}
ESCALATOR = {"sample_fps": 5, "zones": [{"name": "escalator", "polygon": FULL,
                                         "escalator": {"direction": [0, -1], "min_travel": 0.2}}]}


def escalator_scene(up: bool) -> Scene:
    path = [(0.5, 0.85), (0.5, 0.2)] if up else [(0.5, 0.2), (0.5, 0.85)]
    return Scene(walkers=[Walker("person", path, start_s=0.5, duration_s=4.0)], seed=3)


async def eventually(check: Callable[[], object], within_s: float = 60, what: str = "condition") -> None:
    for _ in range(int(within_s * 10)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
async def market(registry_url_factory, tmp_path_factory, detector):
    """A platform with its broker, four simulated cameras onboarded through the API, and the vision worker."""
    data = tmp_path_factory.mktemp("data")
    scenes = {
        "ENT01": (entrance_scene(entering=3, leaving=2, spacing_s=2.5, crossing_s=3.0, loop=False), GATE),
        "HALL01": (crowd_scene(people=4), HALL),
        "ESCUP01": (escalator_scene(up=True), ESCALATOR),
        "ESCDN01": (escalator_scene(up=False), ESCALATOR),
    }
    async with start_test_platform(data, registry_url_factory("sqlite")) as platform:
        async with serve_api(platform.app) as api:
            key = await create_vendor(api, "hik")
            await ensure_market(api, "FT01")
            counter = await api.post("/api/v1/vendor/devices", headers={"X-API-Key": key}, json={
                "devices": [{"serial": "FLOW01", "kind": "flow_counter", "market": "FT01"}]})
            assert counter.status_code in (200, 201), counter.text
            cameras = {}
            for serial, (scene, _) in scenes.items():
                cameras[serial] = CameraSimulator(scene, serial=serial, password="pw", hold_until_streamed=True,
                                                  stream="rtsp" if serial == "ESCDN01" else "mjpeg")
                await cameras[serial].start()
            for serial, (_, analytics) in scenes.items():
                response = await api.post("/api/v1/vision/cameras", headers=ADMIN, json={
                    "host": "127.0.0.1", "port": cameras[serial].port, "password": "pw", "vendor": "hik",
                    "market": "FT01", "analytics": analytics})
                assert response.status_code == 201, response.text
            service = VisionService(
                VisionSettings(telemetry_interval_s=1, reload_s=0.5), data_dir=data, mqtt_host="127.0.0.1",
                mqtt_port=platform.settings.broker.port, secret_for=platform.registry.device_secret,
                detector=detector)
            await service.start()
            try:
                yield api, cameras, service, platform
            finally:
                await service.aclose()
                for camera in cameras.values():
                    await camera.aclose()


async def played(camera: CameraSimulator, seconds: float) -> None:
    await eventually(lambda: camera.scene_time() >= seconds, within_s=seconds * 4 + 30, what="the scene to play")


async def test_scripted_entrance_gives_exact_in_and_out_counts_queryable_per_minute(market) -> None:
    api, cameras, _, _ = market
    await played(cameras["ENT01"], 14.0)
    await asyncio.sleep(3)  # the worker writes counts every 2 s
    response = await api.get("/api/v1/vision/cameras/hik-ENT01/flow", params={"bucket": "minute"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert (response.json()["total_in"], response.json()["total_out"]) == (3, 2)
    assert {p["line"] for p in response.json()["points"]} == {"gate"}


async def test_the_entrance_counts_are_published_as_the_flow_counter_devices_telemetry(market) -> None:
    _, cameras, service, platform = market
    await played(cameras["ENT01"], 14.0)
    link = service.links["hik-FLOW01"]
    await eventually(lambda: not link.outbox, what="the counter's messages to be acknowledged")
    now = datetime.now(UTC)
    readings = await platform.store.range("hik-FLOW01", "flow_counter.telemetry", now - timedelta(hours=1), now)
    assert (sum(r.fields["count_in"] for r in readings), sum(r.fields["count_out"] for r in readings)) == (3, 2)


async def test_a_crowd_above_the_limit_raises_one_peak_event_with_evidence_that_can_be_handled(market) -> None:
    api, cameras, _, _ = market
    await played(cameras["HALL01"], 6.0)
    events = (await api.get("/api/v1/vision/events", params={"camera": "hik-HALL01"}, headers=ADMIN)).json()
    assert [(e["category"], e["zone"], e["count"]) for e in events] == [("crowd_peak", "hall", 4)]
    evidence = await api.get(events[0]["evidence_url"], headers=ADMIN)
    assert evidence.status_code == 200 and evidence.content[:2] == b"\xff\xd8"  # a JPEG
    handled = await api.post(f"/api/v1/vision/events/{events[0]['id']}/handle", json={"note": "stewards sent"},
                             headers=ADMIN)
    assert (handled.json()["state"], handled.json()["handled_by"]) == ("handled", "admin-token")
    again = await api.post(f"/api/v1/vision/events/{events[0]['id']}/handle", json={}, headers=ADMIN)
    assert again.status_code == 409


async def test_the_wrong_way_on_the_escalator_raises_an_event_and_the_right_way_none(market) -> None:
    api, cameras, _, _ = market
    await played(cameras["ESCDN01"], 6.0)
    await played(cameras["ESCUP01"], 6.0)
    down = (await api.get("/api/v1/vision/events", params={"camera": "hik-ESCDN01"}, headers=ADMIN)).json()
    up = (await api.get("/api/v1/vision/events", params={"camera": "hik-ESCUP01"}, headers=ADMIN)).json()
    assert {e["category"] for e in down} == {"escalator_wrong_way"}
    assert up == []


async def test_events_and_telemetry_reach_the_platform_over_mqtt_and_are_acknowledged(market) -> None:
    _, _, service, _ = market
    link = service.links["hik-HALL01"]
    await eventually(lambda: len(link.acked) >= 3, what="acknowledgements")
    assert link.rejected == {}  # every message fitted the camera kind's schema


async def test_a_dropped_stream_reconnects_and_garbage_frames_are_reported_while_the_worker_goes_on(market) -> None:
    _, cameras, service, _ = market
    camera, worker = cameras["ENT01"], service.running["hik-ENT01"].worker
    connects = worker.source.connects
    camera.drop_streams()
    await eventually(lambda: worker.source.connects > connects, what="a reconnect")
    camera.garbage_frames = 3
    await eventually(lambda: worker.stats.bad_frames >= 1, what="a garbage frame")
    processed = worker.stats.processed
    await eventually(lambda: worker.stats.processed > processed + 3, what="frames after the garbage")


async def test_a_bad_stored_configuration_is_reported_and_other_cameras_keep_running(market) -> None:
    _, _, service, _ = market
    await VisionCamera.filter(device_id="hik-ESCUP01").update(analytics={"sample_fps": -1})
    await eventually(lambda: "hik-ESCUP01" in service.problems, what="the problem to be reported")
    assert "analytics configuration invalid" in service.problems["hik-ESCUP01"]
    assert "hik-ESCUP01" not in service.running and "hik-ENT01" in service.running
