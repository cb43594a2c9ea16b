"""Simulators against the real platform: devices registered through the vendor API, each kind over its own
protocol (MQTT to the embedded broker, CoAP with OSCORE, HTTP for food detectors), readings in the store,
nothing lost or doubled across a broker restart, commands carried out."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from broker.topics import down_topic
from fleet.kinds import DeviceKind
from marketfleet.platform import Platform
from simulators import Endpoints, MarketSimulation, SimulatedDevice, register_market_devices
from simulators.market import DEFAULT_TRANSPORTS
from tests.factories import ADMIN, sent_readings, serve_api, start_test_platform

pytestmark = pytest.mark.timeout(240)

MARKET = "SZ-FT-001"
TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    data_dir: Path = tmp_path_factory.mktemp("simulated-market")
    async with start_test_platform(data_dir, f"sqlite://{data_dir / 'registry.sqlite3'}") as platform:
        async with serve_api(platform.app) as api:
            yield platform, api


def endpoints(platform: Platform, api: httpx.AsyncClient) -> Endpoints:
    return Endpoints(
        mqtt_port=platform.settings.broker.port,
        coap_port=platform.services["coap"].port,
        api_url=str(api.base_url).rstrip("/"),
    )


async def until(predicate: Callable[[], bool], within: float = 60.0, what: str = "condition") -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - polls simulator counters, which have no event to await
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not met within {within:g}s") from None


def simulation(creds: list[dict], platform: Platform, api: httpx.AsyncClient, tmp_path: Path,
               **kwargs: object) -> MarketSimulation:  # fmt: skip
    return MarketSimulation(creds, endpoints(platform, api), outbox_path=tmp_path / "outbox.sqlite3",
                            console=Console(quiet=True), ack_timeout_s=5.0, **kwargs)  # type: ignore[arg-type]


def device(sim: MarketSimulation, kind: str) -> SimulatedDevice:
    return next(d for d in sim.devices if d.kind.value == kind)


async def test_every_kind_connects_with_api_credentials_and_its_readings_are_stored(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    platform, api = running
    creds = await register_market_devices(str(api.base_url), TOKEN, {kind.value: 1 for kind in DeviceKind},
                                          market=MARKET)  # fmt: skip
    assert {c["kind"] for c in creds} == {k.value for k in DeviceKind}
    sim = simulation(creds, platform, api, tmp_path, speed=200.0)
    await sim.start()
    try:
        # Every device gets something acknowledged, i.e. durably stored by the platform.
        await until(lambda: all(d.stats.acked >= 3 for d in sim.devices), 90, "every device acknowledged")
    finally:
        await sim.stop(drain_s=10)
        sim.close()
    store = platform.store
    assert store is not None
    for d in sim.devices:
        assert d.stats.rejected == 0, (d.kind, list(d.rejections))
        assert await sent_readings(store, d.device_id) >= d.stats.acked, d
    # Each kind went over its own protocol.
    used = {d.kind.value: d.transport.name for d in sim.devices}
    assert used["esl_base_station"] == "coap" and used["food_detector"] == "http" and used["scale"] == "mqtt"
    assert used == {k: DEFAULT_TRANSPORTS.get(k, "mqtt") for k in used}
    summary = sim.summary()
    assert summary["total"]["devices"] == len(DeviceKind) and summary["total"]["pending"] == 0


async def test_a_10_s_broker_outage_while_1000_readings_are_made_loses_none_and_stores_none_twice(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    platform, api = running
    creds = await register_market_devices(str(api.base_url), TOKEN, {"env_sensor": 2, "scale": 1},
                                          market=MARKET)  # fmt: skip
    # Kinds whose every message is one stored reading (a locker's compartments are one reading each).
    sim = simulation(creds, platform, api, tmp_path, intervals={"env_sensor": 0.015, "scale": 0.04})
    for d in sim.devices:
        d.max_messages = 1000  # each device makes exactly 1,000 messages, boot state included
    broker = platform.services["broker"].embedded
    await sim.start()
    try:
        await until(lambda: all(d.stats.acked >= 10 for d in sim.devices), 60, "first readings acknowledged")
        await broker.aclose()
        await until(lambda: not any(d.connected for d in sim.devices), 30, "devices see the broker gone")
        produced = {d.device_id: d.outbox.next_seq for d in sim.devices}
        await asyncio.sleep(10)  # the outage (issue 4: the link is cut for 10 s)
        assert all(d.outbox.next_seq > produced[d.device_id] + 30 for d in sim.devices)  # still measuring
        assert all(d.pending >= 30 for d in sim.devices)  # kept in the outbox, not lost
        await broker.start()  # same port: the devices reconnect and replay their outboxes
        await until(lambda: all(d.stats.link_ups >= 2 for d in sim.devices), 60, "devices reconnect")
        await until(lambda: all(d.outbox.next_seq == 1000 and d.pending == 0 for d in sim.devices), 120,
                    "all 1,000 made and acknowledged")  # fmt: skip
    finally:
        await sim.stop(drain_s=30)
        sim.close()
    assert platform.store is not None
    for d in sim.devices:
        # Every seq the device ever used is stored, exactly once.
        assert await sent_readings(platform.store, d.device_id) == 1000, d


async def test_commands_on_down_are_carried_out_over_mqtt_and_coap(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    platform, api = running
    creds = await register_market_devices(str(api.base_url), TOKEN, {"cold_locker": 1, "esl_base_station": 1},
                                          market=MARKET)  # fmt: skip
    sim = simulation(creds, platform, api, tmp_path, intervals={"cold_locker": 3600, "esl_base_station": 3600})
    locker, station = device(sim, "cold_locker"), device(sim, "esl_base_station")
    await sim.start()
    try:
        await until(lambda: locker.connected and locker.stats.acked >= 1 and station.stats.acked >= 1, 30, "boot")
        # MQTT: the platform publishes on the device's down/cmd; the locker unlocks compartment 2.
        command = {"id": "cmd-unlock-2", "command": "unlock_compartment", "compartment": 2}
        await platform.services["broker"].publish(down_topic(MARKET, locker.device_id, "cmd"),
                                                  json.dumps(command).encode())  # fmt: skip
        await until(lambda: any(c.id == "cmd-unlock-2" for c in locker.commands), 30, "locker command")
        # A command outside the kind's schema is refused by the device, not applied.
        await platform.services["broker"].publish(down_topic(MARKET, locker.device_id, "cmd"),
                                                  json.dumps({"id": "bad", "command": "show_image"}).encode())
        await until(lambda: any(c.id == "bad" for c in locker.commands), 30, "bad command")
        # CoAP: the command arrives on the base station's Observe of down/cmd.
        relay = {"command": "relay", "label_id": "ESL-0001", "payload": {"command": "flash_led", "colour": "red"}}
        command_id = await platform.services["coap"].send_command(station.device_id, relay)
        await until(lambda: any(c.id == command_id for c in station.commands), 60, "base station command")
        await until(lambda: locker.pending == 0, 30, "door event acknowledged")
    finally:
        await sim.stop(drain_s=10)
        sim.close()
    by_id = {c.id: c for c in locker.commands}
    assert by_id["cmd-unlock-2"].applied and not by_id["bad"].applied
    assert locker.state["compartments"][2]["door"] == "unlocked"
    assert station.commands[-1].applied and station.state["relayed"]
    # The locker's answer (the door event) is in the store.
    assert platform.store is not None
    events = await platform.store.latest([locker.device_id], "cold_locker.event")
    door = events[locker.device_id]
    assert door.fields["door"] == "unlocked" and door.fields["compartment"] == 2


async def test_marketfleet_simulate_registers_and_runs_a_market_from_the_command_line(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    platform, api = running
    command = [
        sys.executable, "-m", "marketfleet", "simulate", "--market", "SZ-CLI-001", "--devices", "26",
        "--api", str(api.base_url).rstrip("/"), "--admin-token", TOKEN, "--duration", "6", "--speed", "100",
        "--mqtt-port", str(platform.settings.broker.port), "--coap-port", str(platform.services["coap"].port),
        "--outbox", str(tmp_path / "cli-outbox.sqlite3"), "--credentials", str(tmp_path / "devices.json"),
        "--fault", "failed_test:food_detector@1", "--no-progress", "--json",
    ]  # fmt: skip
    env = {**os.environ, "MF_DATA_DIR": str(tmp_path / "cli-data")}
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, env=env)  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["total"]["devices"] == 26 and set(summary["kinds"]) == {k.value for k in DeviceKind}
    assert summary["total"]["acked"] > 26 and summary["total"]["rejected"] == 0
    devices = json.loads((tmp_path / "devices.json").read_text())
    assert platform.store is not None
    detector = next(d["device_id"] for d in devices if d["kind"] == "food_detector")
    results = await platform.store.range(detector, "food_detector.event", datetime.now(UTC) - timedelta(hours=1),
                                         datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
    assert any(r.fields.get("passed") is False for r in results)  # the injected failed test reached the store


async def test_marketfleet_simulate_explains_a_bad_option_in_one_line() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfleet", "simulate", "--kind", "toaster=3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2 and "toaster" in stderr.decode()


async def test_demo_market_runs_simulated_devices_of_every_kind(
    running: tuple[Platform, httpx.AsyncClient],
) -> None:
    from marketfleet.demo import DEMO_MARKET, run_demo

    platform, _ = running
    async with run_demo(platform, Console(quiet=True)) as sim:
        assert {d.kind.value for d in sim.devices} == {k.value for k in DeviceKind}
        assert all(d.market == DEMO_MARKET.code for d in sim.devices)
        # The HTTP detector posts to the configured API port, where nothing listens in this test: it retries.
        talking = [d for d in sim.devices if d.transport.name != "http"]
        await until(lambda: all(d.stats.acked >= 1 for d in talking), 90, "every demo device stored something")
    assert platform.store is not None
    assert all([await platform.store.count(d.device_id) >= 1 for d in talking])


def red_band_frame(width: int = 296, height: int = 128, rows: int = 16) -> tuple[str, str]:
    """A full label frame (retail.esl_codec) whose top `rows` rows are red: (base64 text, sha256 of the image)."""
    from retail.esl_codec import LabelImage, encode, frame_to_text

    stride = (width + 7) // 8
    black = bytes(stride * height)
    red = b"\xff" * (stride * rows) + bytes(stride * (height - rows))
    image = LabelImage(width, height, "bwr", black + red)
    return frame_to_text(encode(image)), image.sha256


async def test_an_image_relayed_through_a_base_station_is_decoded_and_shown_by_the_label(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    platform, api = running
    creds = await register_market_devices(str(api.base_url), TOKEN, {"esl_base_station": 1, "esl": 2},
                                          market=MARKET)  # fmt: skip
    sim = simulation(creds, platform, api, tmp_path, intervals={"esl_base_station": 3600, "esl": 3600})
    station = device(sim, "esl_base_station")
    label, other = [d for d in sim.devices if d.kind.value == "esl"]
    frame, sha = red_band_frame()
    await sim.start()
    try:
        await until(lambda: all(d.stats.acked >= 1 for d in sim.devices), 30, "boot")
        relay = {"command": "relay", "label_id": label.device_id,
                 "payload": {"command": "show_image", "image_sha256": sha, "frame": frame}}  # fmt: skip
        await platform.services["coap"].send_command(station.device_id, relay)
        await until(lambda: label.generator.screen.image is not None, 60, "label shows the image")  # type: ignore[attr-defined]
        await until(lambda: label.pending == 0, 30, "shown event acknowledged")
    finally:
        await sim.stop(drain_s=10)
        sim.close()
    image = label.generator.screen.image  # type: ignore[attr-defined]
    assert image.sha256 == sha and image.pixel(0, 0) == "red" and image.pixel(10, 100) == "white"
    assert other.generator.screen.image is None  # type: ignore[attr-defined]  # only the addressed label
    assert station.state["relay_delivered"] == [(label.device_id, True)]
    assert platform.store is not None
    shown = (await platform.store.latest([label.device_id], "esl.event"))[label.device_id]
    assert shown.fields["image_sha256"] == sha  # the platform learns what the label really shows


async def test_garbage_and_a_skewed_clock_are_dead_lettered_and_the_device_keeps_going(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    from simulators import Garbage, SkewClock

    platform, api = running
    creds = await register_market_devices(str(api.base_url), TOKEN, {"env_sensor": 1}, market=MARKET)
    sim = simulation(creds, platform, api, tmp_path, intervals={"env_sensor": 0.05})
    [sensor] = sim.devices
    await sim.start()
    try:
        await until(lambda: sensor.stats.acked >= 5, 30, "first readings")
        await sensor.inject(Garbage(count=3, size=40))
        await sensor.inject(SkewClock(seconds=3600, duration_s=0.5))  # an hour ahead: future_timestamp
        await until(lambda: sensor.stats.reject_reasons["future_timestamp"] >= 1, 30, "skewed readings refused")
        acked = sensor.stats.acked
        await until(lambda: sensor.stats.acked > acked + 5, 30, "readings go on after the clock is right again")
    finally:
        await sim.stop(drain_s=10)
        sim.close()
    assert sensor.pending == 0  # refused messages left the outbox; they are never retried
    letters = await api.get("/api/v1/broker/dead-letters", params={"device_id": sensor.device_id}, headers=ADMIN)
    reasons = [item["reason"] for item in letters.json()["items"]]
    assert reasons.count("malformed") == 3 and "future_timestamp" in reasons
    assert platform.store is not None
    assert await sent_readings(platform.store, sensor.device_id) == sensor.stats.acked


async def test_injected_faults_raise_the_built_in_alerts(
    running: tuple[Platform, httpx.AsyncClient], tmp_path: Path
) -> None:
    from simulators import FailedTest, OutOfRange

    platform, api = running
    creds = await register_market_devices(str(api.base_url), TOKEN,
                                          {"food_detector": 1, "fire_panel": 1, "thermometer": 1}, market=MARKET)
    sim = simulation(creds, platform, api, tmp_path, intervals={"food_detector": 3600, "fire_panel": 3600,
                                                                "thermometer": 3600})  # fmt: skip
    detector, panel, thermometer = device(sim, "food_detector"), device(sim, "fire_panel"), device(sim, "thermometer")
    expected = {detector.device_id: "food-test-failed", panel.device_id: "fire-alarm",
                thermometer.device_id: "fever-at-entrance"}  # fmt: skip

    async def alerts_of(device_id: str) -> set[str]:
        response = await api.get("/api/v1/alerts", params={"device_id": device_id}, headers=ADMIN)
        assert response.status_code == 200, response.text
        return {alert["rule_id"] for alert in response.json()}

    await sim.start()
    try:
        await until(lambda: all(d.stats.acked >= 1 for d in sim.devices), 30, "boot")
        assert [await alerts_of(d) for d in expected] == [set(), set(), set()]  # healthy devices: silent
        await detector.inject(FailedTest(count=1))
        await panel.inject(OutOfRange(duration_s=None))
        await thermometer.inject(OutOfRange(duration_s=None))
        async with asyncio.timeout(60):
            while [rule in await alerts_of(d) for d, rule in expected.items()] != [True] * 3:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        await sim.stop(drain_s=10)
        sim.close()
