"""Rule state survives a restart: a for-duration half-way through its window still fires at its due time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rules.models import Alert, AlertStatus
from tests.factories import eventually
from tests.integration.rules.conftest import forget_routing_and_state, start_service
from tests.unit.rules.factories import env_reading, envelope

pytestmark = pytest.mark.timeout(60)


def hot_rule(rule_id: str, window: str) -> dict:
    return {"id": rule_id, "name": "Hot", "scope": {"kind": "env_sensor"}, "for": window,
            "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 30, "clear": 28}}


async def test_a_half_elapsed_for_duration_fires_on_time_after_a_restart(platform, tmp_path: Path):
    first = await start_service(tmp_path)
    await first.create_rule(hot_rule("hot-restart", "3s"))
    started = datetime.now(UTC)
    first.process(envelope("ENV-RS1", "env_sensor", env_reading(35), at=started))
    await asyncio.sleep(1.5)
    assert first.engine.state_of("hot-restart", "ENV-RS1") == "pending"
    await first.aclose()  # the platform stops half-way through the window

    second = await start_service(tmp_path)
    try:
        assert second.engine.state_of("hot-restart", "ENV-RS1") == "pending"
        due = started + timedelta(seconds=3)
        early = await Alert.filter(rule_id="hot-restart").exists()
        alert = await eventually(lambda: Alert.filter(rule_id="hot-restart", device_id="ENV-RS1").first())
        seen = datetime.now(UTC)
        assert not early
        assert abs((alert.opened_at - due).total_seconds()) < 0.001  # at the original due time …
        assert due <= seen < due + timedelta(seconds=1)  # … and noticed then, with no new reading
    finally:
        await second.aclose()
        await forget_routing_and_state()


async def test_a_firing_alert_still_clears_itself_after_a_restart(platform, tmp_path: Path):
    first = await start_service(tmp_path)
    await first.create_rule(hot_rule("hot-restart-clear", "0s"))
    first.process(envelope("ENV-RS2", "env_sensor", env_reading(35), at=datetime.now(UTC)))
    await first.aclose()
    second = await start_service(tmp_path)
    try:
        second.process(envelope("ENV-RS2", "env_sensor", env_reading(22), at=datetime.now(UTC)))
        alert = await eventually(lambda: Alert.filter(rule_id="hot-restart-clear", status=AlertStatus.RESOLVED).first())
        assert alert.resolution == "auto"
    finally:
        await second.aclose()
        await forget_routing_and_state()


async def test_an_alert_resolved_while_the_engine_was_down_is_forgotten(platform, tmp_path: Path):
    first = await start_service(tmp_path)
    await first.create_rule(hot_rule("hot-restart-manual", "0s"))
    first.process(envelope("ENV-RS3", "env_sensor", env_reading(35), at=datetime.now(UTC)))
    await first.aclose()
    await Alert.filter(rule_id="hot-restart-manual").update(status=AlertStatus.RESOLVED, open_key=None)
    second = await start_service(tmp_path)
    try:
        assert second.engine.state_of("hot-restart-manual", "ENV-RS3") is None
        second.process(envelope("ENV-RS3", "env_sensor", env_reading(36), at=datetime.now(UTC)))
        await eventually(lambda: Alert.filter(rule_id="hot-restart-manual", status=AlertStatus.OPEN).first())
        assert await Alert.filter(rule_id="hot-restart-manual").count() == 2
    finally:
        await second.aclose()
        await forget_routing_and_state()
