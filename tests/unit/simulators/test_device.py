"""SimulatedDevice on the in-process loopback transport: delivery, acks, replay, commands and fault modes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from simulators import Burst, DropLink, Garbage, LoopbackTransport, SimulatedDevice, SkewClock, open_outbox
from simulators.faults import FailedTest, OutOfRange
from simulators.wire import parse_ts, utcnow


async def until(predicate, within: float = 5.0) -> None:
    """Wait (yielding at least once, so started tasks get going) until `predicate()` holds."""
    try:
        async with asyncio.timeout(within):
            await asyncio.sleep(0)
            while not predicate():  # noqa: ASYNC110 - polls device state, which has no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError("condition not met in time") from None


def wire_messages(transport: LoopbackTransport) -> list[dict]:
    out: list[dict] = []
    for uplink in transport.uplinks:
        body = json.loads(uplink.data)
        out += body if isinstance(body, list) else [body]
    return out


@pytest.fixture
async def running() -> AsyncIterator:
    """Start devices with `start(device)`; every started device is stopped afterwards."""
    started: list[SimulatedDevice] = []
    tasks: list[asyncio.Task] = []

    def start(device: SimulatedDevice) -> SimulatedDevice:
        started.append(device)
        tasks.append(asyncio.create_task(device.run()))
        return device

    yield start
    for device in started:
        await asyncio.wait_for(device.stop(), 10)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_messages_go_out_in_seq_order_and_acks_empty_the_outbox(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("env_sensor", "acme-EN1", "s", "M1", transport, interval_s=0.005,
                                     max_messages=200))  # fmt: skip
    await until(lambda: device.stats.generated == 200 and device.pending == 0)
    assert sorted(transport.stored) == list(range(200))
    seqs = [m["seq"] for m in wire_messages(transport)]
    assert seqs == sorted(seqs) and seqs[0] == 0
    assert device.stats.acked == 200 and device.stats.rejected == 0
    assert transport.stored_channels[0] == "state"  # the boot message
    first = transport.stored[1]
    assert set(first) == {"seq", "ts", "payload"} and abs(parse_ts(first["ts"]) - utcnow()) < timedelta(seconds=30)


async def test_unacknowledged_messages_are_resent_after_the_ack_timeout(running) -> None:
    transport = LoopbackTransport(auto_ack=False)
    device = running(SimulatedDevice("scale", "acme-SC1", "s", "M1", transport, interval_s=None,
                                     ack_timeout_s=0.2, boot_message=False))  # fmt: skip
    device.produce_messages(3)
    await until(lambda: device.stats.sent == 3)
    await until(lambda: device.stats.resent >= 3, within=3)
    assert device.pending == 3
    ack = transport.platform_ack("event", transport.uplinks[-1].data)
    assert ack is not None
    device.on_ack(ack)
    assert device.pending < 3


async def test_inflight_window_is_respected(running) -> None:
    transport = LoopbackTransport(auto_ack=False)
    device = running(SimulatedDevice("display", "acme-DP1", "s", None, transport, interval_s=None,
                                     max_inflight=10, ack_timeout_s=60, boot_message=False))  # fmt: skip
    device.produce_messages(25)
    await until(lambda: device.stats.sent == 10)
    await asyncio.sleep(0.2)
    assert device.stats.sent == 10
    device.on_ack(transport.platform_ack("telemetry", transport.uplinks[0].data))  # type: ignore[arg-type]
    await until(lambda: device.stats.sent > 10)


async def test_drop_link_keeps_producing_and_replays_in_order_after(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("cold_locker", "acme-CL1", "s", "M1", transport, interval_s=0.01))
    await until(lambda: device.stats.acked > 5)
    await device.inject(DropLink(seconds=0.5))
    assert not device.connected
    before = device.outbox.next_seq
    await asyncio.sleep(0.3)
    assert device.outbox.next_seq > before + 5  # still producing while the link is down
    assert device.pending > 5 and device.stats.link_downs == 1
    await until(lambda: device.connected, within=3)
    await device.stop(drain_s=3)
    assert device.pending == 0
    assert sorted(transport.stored) == list(range(device.outbox.next_seq))  # none lost


async def test_garbage_is_not_json_and_nothing_is_acknowledged_for_it(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("thermometer", "acme-TH1", "s", "M1", transport, interval_s=None))
    await until(lambda: device.stats.acked == 1)  # the boot message
    acked = device.stats.acked
    await device.inject(Garbage(count=3, size=40))
    assert device.stats.garbage == 3 and len(transport.raw) == 3
    for uplink in transport.raw:
        with pytest.raises(ValueError):
            json.loads(uplink.data)
    assert transport.malformed == 3 and device.stats.acked == acked


async def test_skewed_clock_puts_ts_in_the_future_and_rejected_messages_leave_the_outbox(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("fire_panel", "acme-FP1", "s", "M1", transport, interval_s=None,
                                     boot_message=False))  # fmt: skip
    await device.inject(SkewClock(seconds=3600, duration_s=0.3))
    skewed = device.produce(2)
    for entry in skewed:
        ahead = parse_ts(entry.ts) - utcnow()  # type: ignore[arg-type]
        assert timedelta(minutes=59) < ahead < timedelta(minutes=61)
    await until(lambda: device.pending == 0)
    assert device.stats.rejected == len(skewed) and device.stats.reject_reasons["future_timestamp"] == len(skewed)
    await asyncio.sleep(0.4)  # the skew ends after duration_s
    assert abs(device.clock_skew_s) < 1e-9
    normal = device.produce(1)
    assert abs(parse_ts(normal[0].ts) - utcnow()) < timedelta(seconds=5)  # type: ignore[arg-type]
    await until(lambda: device.stats.acked == 1)


async def test_burst_produces_many_messages_sent_as_arrays(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("camera", "acme-CA1", "s", "M1", transport, interval_s=None,
                                     boot_message=False))  # fmt: skip
    await device.inject(Burst(count=120))
    assert device.stats.generated == 120
    await until(lambda: device.pending == 0)
    assert len(transport.stored) == 120
    assert any(isinstance(json.loads(u.data), list) for u in transport.uplinks)
    assert len(transport.uplinks) < 120


async def test_scheduled_faults_fire_at_their_time(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("flow_counter", "acme-FC1", "s", "M1", transport, interval_s=None,
                                     faults=[Garbage(at_s=0.05, every_s=0.05, count=1), Burst(at_s=0.1, count=7)]))
    await until(lambda: device.stats.garbage >= 3 and device.stats.generated >= 8)


async def test_commands_are_validated_and_reach_the_device_state(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("esl", "acme-EL1", "s", "M1", transport, interval_s=None))
    await until(lambda: device.pending == 0)
    sha = "0f" * 32
    transport.command({"id": "c-1", "command": "show_image", "image_sha256": sha, "url": "coap://p/img/1"})
    transport.command({"id": "c-2", "command": "flash_led", "colour": "red", "seconds": 5})
    transport.command({"id": "c-3", "command": "set_plu", "version": 1, "entries": []})  # not an ESL command
    transport.command(["not", "an", "object"])
    assert device.state["image_sha256"] == sha and device.state["led"]["colour"] == "red"
    assert [(c.id, c.applied) for c in device.commands] == [("c-1", True), ("c-2", True), ("c-3", False),
                                                            (None, False)]  # fmt: skip
    assert device.stats.commands == 2 and device.stats.bad_commands == 2
    await until(lambda: device.pending == 0)
    shown = [m for m in transport.stored.values() if m["payload"].get("type") == "shown"]
    assert shown and shown[-1]["payload"]["image_sha256"] == sha


async def test_a_timed_show_image_fires_on_time_without_waiting_for_a_tick(running) -> None:
    transport = LoopbackTransport()
    device = running(SimulatedDevice("esl", "acme-EL2", "s", "M1", transport, interval_s=3600))
    await until(lambda: device.connected)
    at = utcnow() + timedelta(seconds=0.3)
    transport.command({"id": "t", "command": "show_image", "image_sha256": "aa" * 32, "url": "u",
                       "at": at.isoformat()})  # fmt: skip
    assert device.state["image_sha256"] != "aa" * 32
    await until(lambda: device.state["image_sha256"] == "aa" * 32, within=2)
    assert utcnow() >= at


async def test_seq_continues_after_a_device_restart(tmp_path: Path, running) -> None:
    path = tmp_path / "dev.sqlite3"
    first = SimulatedDevice("env_sensor", "acme-EN9", "s", "M1", LoopbackTransport(auto_ack=False),
                            outbox=open_outbox(path, "acme-EN9"), interval_s=None)  # fmt: skip
    first.produce_messages(5)
    first.outbox.close()
    transport = LoopbackTransport()
    second = running(SimulatedDevice("env_sensor", "acme-EN9", "s", "M1", transport,
                                     outbox=open_outbox(path, "acme-EN9"), interval_s=None))  # fmt: skip
    await until(lambda: second.pending == 0)
    assert sorted(transport.stored) == list(range(6))  # 5 from before (replayed) + the new boot message


async def test_out_of_range_fault_sends_readings_a_rule_must_catch_then_clears(running) -> None:
    transport = LoopbackTransport()
    sensor = running(SimulatedDevice("env_sensor", "acme-EN5", "s", "M1", transport, interval_s=None,
                                     boot_message=False))  # fmt: skip
    locker_link = LoopbackTransport()
    locker = running(SimulatedDevice("cold_locker", "acme-CL5", "s", "M1", locker_link, interval_s=None,
                                     boot_message=False))  # fmt: skip
    await until(lambda: sensor.connected and locker.connected)
    await sensor.inject(OutOfRange(duration_s=0.2))
    await locker.inject(OutOfRange(duration_s=0.2))
    await until(lambda: sensor.pending == 0 and locker.pending == 0 and transport.stored and locker_link.stored)
    hot = transport.stored[0]["payload"]
    assert hot["temperature_c"] >= 44 and hot["humidity_pct"] == 95.0  # schema-valid (stored), out of range
    compartments = {c["compartment"]: c["temperature_c"] for c in locker_link.stored[0]["payload"]["compartments"]}
    assert compartments[1] > 10 and all(1 <= t <= 10 for n, t in compartments.items() if n != 1)
    await asyncio.sleep(0.3)
    assert sensor.produce(1)[0].payload["temperature_c"] < 40  # the fault cleared after duration_s


async def test_failed_test_fault_reports_a_failed_food_test(running) -> None:
    transport = LoopbackTransport()
    detector = running(SimulatedDevice("food_detector", "acme-FD5", "s", "M1", transport, interval_s=None,
                                       boot_message=False))  # fmt: skip
    await until(lambda: detector.connected)
    await detector.inject(FailedTest(count=2))
    await until(lambda: len(transport.stored) == 2)
    for message in transport.stored.values():
        result = message["payload"]
        assert result["type"] == "test_result" and result["passed"] is False and result["value"] >= result["limit"]
