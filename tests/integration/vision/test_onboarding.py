"""ONVIF onboarding against the camera simulator: discovery, identity and URIs, registration, clear errors."""

from __future__ import annotations

import pytest

from tests.factories import ADMIN, create_vendor, ensure_market, serve_api, start_test_platform
from vision.onboarding import OnboardingError, describe_camera, discover
from vision.scenes import entrance_scene
from vision.simulator import CameraSimulator

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def camera():
    async with CameraSimulator(entrance_scene(), serial="SIMCAM01", password="s3cret") as cam:
        yield cam


@pytest.fixture(scope="module")
async def api(registry_url_factory, tmp_path_factory):
    async with start_test_platform(tmp_path_factory.mktemp("data"), registry_url_factory("sqlite")) as platform:
        async with serve_api(platform.app) as client:
            await create_vendor(client, "hik")
            await ensure_market(client, "FT01")
            yield client


async def test_ws_discovery_finds_the_simulated_camera(camera: CameraSimulator) -> None:
    found = await discover(0.5, targets=[("127.0.0.1", camera.discovery_port)])
    assert [(c.xaddrs, c.name) for c in found] == [((camera.device_url,), "sim-SIMCAM01")]


async def test_describe_camera_reads_identity_profiles_and_uris(camera: CameraSimulator) -> None:
    info = await describe_camera("127.0.0.1", camera.port, "admin", "s3cret")
    assert (info.serial, info.stream_uri, info.snapshot_uri, info.resolution) == (
        "SIMCAM01", camera.mjpeg_url, camera.snapshot_url, (320, 240))


async def test_a_wrong_camera_password_is_named_as_such(camera: CameraSimulator) -> None:
    with pytest.raises(OnboardingError, match="wrong user name or password"):
        await describe_camera("127.0.0.1", camera.port, "admin", "guess")


async def test_onboarding_registers_the_camera_as_a_device_with_its_stream_uri(api, camera) -> None:
    body = {"host": "127.0.0.1", "port": camera.port, "password": "s3cret", "vendor": "hik", "market": "FT01"}
    response = await api.post("/api/v1/vision/cameras", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert (response.json()["device_id"], response.json()["stream_uri"]) == ("hik-SIMCAM01", camera.mjpeg_url)
    device = await api.get("/api/v1/admin/devices/hik-SIMCAM01", headers=ADMIN)
    assert device.status_code == 200, device.text
    assert (device.json()["kind"], device.json()["metadata"]["stream_uri"]) == ("camera", camera.mjpeg_url)
    again = await api.post("/api/v1/vision/cameras", json=body, headers=ADMIN)  # idempotent by serial
    assert again.status_code == 201 and again.json()["device_id"] == "hik-SIMCAM01"


async def test_onboarding_errors_come_back_as_422_with_the_reason(api, camera) -> None:
    base = {"host": "127.0.0.1", "port": camera.port, "vendor": "hik"}
    wrong_password = await api.post("/api/v1/vision/cameras", json={**base, "password": "x"}, headers=ADMIN)
    unknown_vendor = await api.post("/api/v1/vision/cameras", json={**base, "password": "s3cret", "vendor": "nope"},
                                    headers=ADMIN)
    bad_zone = await api.post("/api/v1/vision/cameras", headers=ADMIN, json={
        **base, "password": "s3cret", "analytics": {"zones": [{"name": "z", "polygon": [[0, 0], [2, 0], [1, 1]]}]}})
    assert (wrong_password.status_code, unknown_vendor.status_code, bad_zone.status_code) == (422, 422, 422)
    assert "wrong user name or password" in wrong_password.json()["detail"]
    assert "no vendor 'nope'" in unknown_vendor.json()["detail"]
    assert "outside the frame" in bad_zone.json()["detail"]


async def test_analytics_configuration_is_validated_and_stored(api, camera) -> None:
    good = {"sample_fps": 4, "lines": [{"name": "gate", "start": [1, 0.5], "end": [0, 0.5]}]}
    stored = await api.put("/api/v1/vision/cameras/hik-SIMCAM01/analytics", json=good, headers=ADMIN)
    refused = await api.put("/api/v1/vision/cameras/hik-SIMCAM01/analytics", headers=ADMIN,
                            json={"lines": [{"name": "gate", "start": [0.5, 0.5], "end": [0.5, 0.5]}]})
    unknown = await api.put("/api/v1/vision/cameras/hik-NOPE/analytics", json=good, headers=ADMIN)
    assert stored.status_code == 200 and stored.json()["analytics"]["lines"][0]["name"] == "gate"
    assert refused.status_code == 422 and "same point" in refused.json()["detail"]
    assert unknown.status_code == 404
