"""Two processes on one registry (the platform in roles): the engine opens an alert where ingest runs, and the
API process's alert stream announces it, and a change made in the API process, exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rules import setup
from rules.models import Alert
from tests.factories import eventually
from tests.integration.rules.conftest import FAST, forget_routing_and_state, start_service
from tests.unit.rules.factories import env_reading, envelope

pytestmark = pytest.mark.timeout(60)

HOT = {"id": "hot-mirror", "name": "Hot", "scope": {"kind": "env_sensor"},
       "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 30}}


async def test_the_api_process_streams_alerts_the_ingest_process_opened(platform, tmp_path: Path):
    ingest_side = await start_service(tmp_path / "ingest")
    api_side = setup(FAST, data_dir=tmp_path / "api")
    api_side.mirror_alerts(interval=0.1)
    await api_side.start()
    try:
        await ingest_side.create_rule(HOT)
        subscription = api_side.stream.subscribe(lambda m: m["alert"]["rule_id"] == "hot-mirror")
        ingest_side.process(envelope("ENV-MIR1", "env_sensor", env_reading(36), at=datetime.now(UTC)))
        opened = await asyncio.wait_for(subscription.get(), 10)
        assert opened is not None and opened["event"] == "alert.opened"
        assert opened["alert"]["device_id"] == "ENV-MIR1"

        alert = await eventually(lambda: Alert.get_or_none(rule_id="hot-mirror", device_id="ENV-MIR1"))
        await api_side.alerts.acknowledge(alert.id, "user:li", "on my way")  # made in the API process
        acknowledged = await asyncio.wait_for(subscription.get(), 10)
        assert acknowledged is not None and acknowledged["event"] == "alert.acknowledged"
        assert acknowledged["comment"] == "on my way"
        assert api_side.mirror is not None and await api_side.mirror.poll() == 0  # nothing left to tell
        assert subscription.pending == 0  # announced once, by the mirror, not also directly
    finally:
        await api_side.aclose()
        await ingest_side.aclose()
        await forget_routing_and_state()
