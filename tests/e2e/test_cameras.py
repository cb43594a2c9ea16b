"""Cameras page: drawing a line on a camera's picture saves it through the vision API and the running vision worker
counts people crossing it (issue 10); who may edit, who may only look, who sees nothing; clear errors for bad
lines; a camera that is away shows a placeholder with the reason; events with evidence are handled from the page.

Real pieces only: simulated ONVIF cameras (vision/simulator.py) onboarded through the API, the vision worker
(`VisionService`) with the tiny seeded YOLO the vision integration tests train (their fixtures, imported), the
platform's broker, and Chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.i18n import CATALOG
from tests.e2e.conftest import Site, sign_in
from tests.factories import ADMIN, eventually
from tests.integration.vision.conftest import detector, tiny_model  # noqa: F401  (the vision tests' fixtures)
from vision.config import VisionSettings
from vision.models import VisionCamera
from vision.publisher import DeviceLink
from vision.scenes import crowd_scene, entrance_scene
from vision.service import VisionService
from vision.simulator import CameraSimulator
from vision.store import VisionStore

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

GATE = "hik-GATE01"  # streams an entrance: people walking down (in) and up (out) across mid-height
GONE = "hik-GONE01"  # onboarded, then switched off: unreachable


async def onboard_simulated_camera(site: Site, serial: str, scene: Any, name: str,
                                   analytics: dict[str, Any] | None = None) -> CameraSimulator:
    """Start a simulated camera and onboard it into market FT01 under vendor `hik` (created on first use)."""
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as api:
        vendor = await api.post("/api/v1/admin/vendors", json={"code": "hik", "name": "Hik Cameras"}, headers=ADMIN)
        assert vendor.status_code in (201, 409), vendor.text
        camera = CameraSimulator(scene, serial=serial, password="pw")
        await camera.start()
        response = await api.post("/api/v1/vision/cameras", headers=ADMIN, json={
            "host": "127.0.0.1", "port": camera.port, "password": "pw", "vendor": "hik", "market": "FT01",
            "name": name, "analytics": analytics or {"sample_fps": 5}})
        assert response.status_code == 201, response.text
        return camera


async def show_camera_activity(site: Site, camera: CameraSimulator, device_id: str) -> None:
    """What a watched camera looks like after a while: passenger flow over the day and a crowd event with its
    evidence picture (the camera's own frame), as the worker would have written them."""
    store = VisionStore()
    now = datetime.now(UTC)
    for hours_ago in range(1, 13):
        await store.add_counts(device_id, now - timedelta(hours=hours_ago),
                               {"gate": (20 + 7 * (hours_ago % 5), 12 + 5 * (hours_ago % 3))})
    event = await store.record_event(camera=device_id, market="FT01", category="crowd_peak", zone="hall", count=9,
                                     confidence=0.82, detail="9 > limit 6 for 12 s")
    path = Path(site.platform.settings.data_dir) / "vision" / "evidence" / device_id / f"{event.id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(timeout=10) as http:
        path.write_bytes((await http.get(camera.snapshot_url)).content)
    await store.set_evidence(event, str(path))


@pytest.fixture(scope="module")
async def cameras(site: Site) -> AsyncIterator[dict[str, CameraSimulator]]:
    gate = await onboard_simulated_camera(site, "GATE01", entrance_scene(), "东门入口 East gate")
    gone = await onboard_simulated_camera(site, "GONE01", crowd_scene(), "西门 West gate")
    await show_camera_activity(site, gone, GONE)
    await gone.aclose()
    # Switched off for analysis, so the worker leaves it (and its presence) alone: the presence test drives it.
    await VisionCamera.filter(device_id=GONE).update(enabled=False)
    try:
        yield {GATE: gate}
    finally:
        await gate.aclose()


SHOWN = "hik-HALL01"  # the camera of the screenshots: a line, a zone, a day of flow, an open event
SHOWN_ANALYTICS = {
    "sample_fps": 2,
    "lines": [{"name": "gate", "start": [1, 0.5], "end": [0, 0.5]}],
    "zones": [{"name": "hall", "polygon": [[0.05, 0.62], [0.6, 0.62], [0.6, 0.95], [0.05, 0.95]], "crowd_limit": 6}],
}


@pytest.fixture(scope="module")
async def screenshot_camera(site: Site) -> AsyncIterator[str]:
    """A camera at work for the screenshots (test_screenshots.py): live picture, lines and zones, flow, an event."""
    camera = await onboard_simulated_camera(site, "HALL01", entrance_scene(), "东门入口 East gate", SHOWN_ANALYTICS)
    await show_camera_activity(site, camera, SHOWN)
    try:
        yield SHOWN
    finally:
        await camera.aclose()


@pytest.fixture(scope="module")
async def worker(site: Site, cameras, detector) -> AsyncIterator[VisionService]:  # noqa: F811
    """The vision worker, as `marketfleet vision run` starts it, re-reading the configuration every 0.5 s."""
    service = VisionService(
        VisionSettings(telemetry_interval_s=1, reload_s=0.5), data_dir=Path(site.platform.settings.data_dir),
        mqtt_host="127.0.0.1", mqtt_port=site.mqtt_port, secret_for=site.platform.registry.device_secret,
        detector=detector)
    await service.start()
    try:
        yield service
    finally:
        await service.aclose()


def text(language: str, key: str) -> str:
    return CATALOG[language][key]


async def open_editor(page: Any, site: Site, username: str, device_id: str) -> None:
    await sign_in(page, site, username, next_path=f"/cameras/{device_id}")
    await page.wait_for_selector("#editor[data-ready='1']")


async def click_on_picture(page: Any, fx: float, fy: float) -> None:
    box = await page.locator("#snapshot").bounding_box()
    await page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


async def test_drawing_a_line_on_a_camera_snapshot_saves_it_and_the_worker_uses_it(site, new_page, cameras,
                                                                                   worker) -> None:
    page = await new_page()
    await open_editor(page, site, "mia", GATE)
    assert await page.get_attribute("#frame .picture", "data-state") == "ok"  # the camera's own picture
    # Start on the right, end on the left: walking down the picture crosses from its right to its left = in.
    await click_on_picture(page, 0.98, 0.5)
    await click_on_picture(page, 0.02, 0.5)
    await page.fill("#shape-name", "east gate")
    await page.click("#add-shape")
    await page.wait_for_selector("svg line.count-line[data-line='east gate']", state="attached")
    await page.click("#save-analytics")
    await page.wait_for_selector("#editor-status[data-kind='done']")

    async with httpx.AsyncClient(base_url=site.url, timeout=30, headers=ADMIN) as api:
        stored = (await api.get(f"/api/v1/vision/cameras/{GATE}")).json()["analytics"]
        assert [line["name"] for line in stored["lines"]] == ["east gate"]
        (x1, y1), (x2, y2) = stored["lines"][0]["start"], stored["lines"][0]["end"]
        assert x1 == pytest.approx(0.98, abs=0.01) and x2 == pytest.approx(0.02, abs=0.01)
        assert y1 == pytest.approx(0.5, abs=0.01) and y2 == pytest.approx(0.5, abs=0.01)
        assert stored["sample_fps"] == 5  # what the editor does not show is kept

        async def crossings_counted() -> int:
            flow = (await api.get(f"/api/v1/vision/cameras/{GATE}/flow", params={"line": "east gate"})).json()
            return int(flow["total_in"])

        # The worker re-reads the configuration, restarts the camera with the new line and counts people walking
        # in across it (the scene loops: two in, one out every ten seconds).
        assert await eventually(crossings_counted, within=240) >= 1
    running = worker.running[GATE].worker.spec.analytics
    assert [line.name for line in running.lines] == ["east gate"]


async def test_a_manager_sees_the_lines_but_cannot_save_them(site, new_page, cameras) -> None:
    page = await new_page()
    await open_editor(page, site, "manny", GATE)
    assert await page.locator("[data-view-only]").is_visible()
    assert await page.locator("#save-analytics, #add-shape").count() == 0
    # Even sent by hand from the page, the save is refused with the reason.
    answer = await page.evaluate("""async (url) => {
        const r = await fetch(url, {method: "PUT", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({lines: [{name: "x", start: [0, 0.5], end: [1, 0.5]}]})});
        return [r.status, (await r.json()).detail];
    }""", f"/api/v1/vision/cameras/{GATE}/analytics")
    assert answer[0] == 403 and "fleet:write" in answer[1]


async def test_a_vendor_does_not_see_cameras(site, new_page, cameras) -> None:
    page = await new_page()
    await sign_in(page, site, "vera")
    assert await page.locator("nav.main-nav a[href='/cameras']").count() == 0
    for path in ("/cameras", f"/cameras/{GATE}", f"/cameras/{GATE}/snapshot.jpg"):
        response = await page.goto(site.url + path)
        assert response.status == 403, path


async def test_a_line_with_one_point_or_a_point_outside_the_picture_gets_a_clear_error(site, new_page,
                                                                                       cameras) -> None:
    page = await new_page()
    await open_editor(page, site, "mia", GATE)  # mia reads Chinese
    await click_on_picture(page, 0.3, 0.3)
    await page.fill("#shape-name", "half")
    await page.click("#add-shape")
    assert await page.inner_text("#editor-status") == text("zh", "cameras.err.line_points")
    frame = await page.locator("#frame").bounding_box()
    await page.mouse.click(frame["x"] + 4, frame["y"] + 4)  # on the frame around the picture, not on it
    assert await page.inner_text("#editor-status") == text("zh", "cameras.err.outside")
    assert await page.locator("svg line.count-line[data-line='half']").count() == 0
    # A line the editor cannot draw, sent by hand: the service names the point and the rule.
    answer = await page.evaluate("""async (url) => {
        const r = await fetch(url, {method: "PUT", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({lines: [{name: "x", start: [1.5, 0.5], end: [0, 0.5]}]})});
        return [r.status, (await r.json()).detail];
    }""", f"/api/v1/vision/cameras/{GATE}/analytics")
    assert answer[0] == 422 and "outside the frame" in answer[1]


async def test_a_camera_that_is_away_shows_a_placeholder_with_the_reason(site, new_page, cameras) -> None:
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/cameras")
    await page.wait_for_selector(f"article[data-camera='{GATE}'] figure[data-state='ok']")
    gone = page.locator(f"article[data-camera='{GONE}'] figure[data-state='unreachable'] .placeholder")
    await gone.wait_for()
    assert await gone.inner_text() == text("zh", "cameras.unreachable")
    await page.goto(f"{site.url}/cameras/{GONE}")
    await page.wait_for_selector("#editor[data-ready='1'] .picture[data-state='unreachable']")
    assert "unreachable" in await page.inner_text("#snapshot-problem")  # the reason, as the camera failed


async def test_passenger_flow_is_charted_and_an_event_with_evidence_is_handled_by_a_manager(site, new_page,
                                                                                            cameras) -> None:
    page = await new_page()
    await sign_in(page, site, "manny", next_path=f"/cameras/{GONE}")
    await page.wait_for_selector("#flow-chart[data-ready='1']")
    assert int(await page.get_attribute("#flow-chart", "data-points")) >= 10
    event = page.locator("article.camera-event[data-state='open']").first
    await event.wait_for()
    assert await event.locator("img.evidence").evaluate("img => img.complete && img.naturalWidth > 0")
    event_id = await event.get_attribute("data-event")
    await event.locator("input[name=note]").fill("stewards sent")
    await event.locator("button[data-action=handle]").click()
    handled = page.locator(f"article.camera-event[data-event='{event_id}'][data-state='handled']")
    await handled.wait_for()
    assert "user:manny" in await handled.inner_text() and "stewards sent" in await handled.inner_text()


async def test_a_cameras_presence_changes_on_the_grid_without_reloading(site, new_page, cameras, tmp_path) -> None:
    page = await new_page()
    await sign_in(page, site, "manny", next_path="/cameras")
    tile = f"article[data-camera='{GONE}']"
    await page.wait_for_selector(f"{tile}.offline")
    await page.wait_for_function("() => (window.mfLive || []).some(s => s.readyState === 1)")
    secret = await site.platform.registry.device_secret(GONE)
    assert secret is not None
    # What the worker does for a camera it runs: connect over MQTT as the camera device.
    link = DeviceLink(host="127.0.0.1", port=site.mqtt_port, device_id=GONE, secret=secret, market="FT01",
                      seq_file=tmp_path / "seq")
    link.start()
    try:
        await page.wait_for_selector(f"{tile}.online")
        assert await page.inner_text(f"{tile} [data-presence-of]") == text("zh", "presence.online")
    finally:
        await link.aclose()
    await page.wait_for_selector(f"{tile}.offline")


async def test_the_camera_page_shows_how_the_vision_worker_keeps_up(site, new_page, cameras, worker) -> None:
    store = site.platform.services["store"]

    async def reported() -> Any:
        return (await store.latest([GATE], "camera.telemetry")).get(GATE)

    await eventually(reported, within=120)  # the worker reports every second here
    page = await new_page()
    await open_editor(page, site, "manny", GATE)
    assert await page.get_attribute("[data-worker]", "data-worker") in ("ok", "behind")
    shown = await page.inner_text("[data-worker]")
    assert re.search(r"每秒分析 [\d.]+ 帧（设定 5）", shown) and re.search(r"每帧推理 \d+ 毫秒", shown)
    gone = await new_page()
    await open_editor(gone, site, "manny", GONE)  # not analysed: says so instead of showing nothing
    assert await gone.get_attribute("[data-worker]", "data-worker") == "none"


async def test_an_event_handled_twice_says_who_handled_it(site, new_page, cameras) -> None:
    event = await VisionStore().record_event(camera=GONE, market="FT01", category="littering", zone="aisle",
                                             confidence=0.7, detail="left 40 s")
    page = await new_page()
    await sign_in(page, site, "manny", next_path=f"/cameras/{GONE}")
    url = f"{site.url}/cameras/{GONE}/events/{event.id}/handle"
    first = await page.request.post(url, form={"note": "swept"})
    assert first.status == 200
    again = await page.request.post(url, form={"note": "again"})
    assert again.status == 409 and "already handled by user:manny" in await again.text()


async def test_drawing_a_zone_with_a_crowd_limit_saves_it_and_the_worker_uses_it(site, new_page, cameras,
                                                                                 worker) -> None:
    page = await new_page()
    await open_editor(page, site, "mia", GATE)
    await page.check("input[name=tool][value=zone]")
    await page.evaluate("document.querySelector('#snapshot').scrollIntoView({block: 'start'})")  # all in view
    for fx, fy in ((0.1, 0.1), (0.4, 0.1), (0.4, 0.35), (0.1, 0.35)):
        await click_on_picture(page, fx, fy)
    await page.fill("#shape-name", "stall row")
    await page.fill("#zone-limit", "4")
    await page.click("#add-shape")
    await page.wait_for_selector("svg polygon.zone[data-zone='stall row']", state="attached")
    await page.click("#save-analytics")
    await page.wait_for_selector("#editor-status[data-kind='done']")

    async with httpx.AsyncClient(base_url=site.url, timeout=30, headers=ADMIN) as api:
        stored = (await api.get(f"/api/v1/vision/cameras/{GATE}")).json()["analytics"]
    zone = next(z for z in stored["zones"] if z["name"] == "stall row")
    assert zone["crowd_limit"] == 4 and len(zone["polygon"]) == 4
    assert zone["polygon"][2] == pytest.approx([0.4, 0.35], abs=0.01)

    def runs_the_new_zone() -> bool:  # the worker re-reads the configuration and restarts the camera
        running = worker.running.get(GATE)  # absent for a moment while the camera restarts
        return running is not None and "stall row" in [z.name for z in running.worker.spec.analytics.zones]

    await eventually(runs_the_new_zone, within=120, what="the worker running the new zone")
