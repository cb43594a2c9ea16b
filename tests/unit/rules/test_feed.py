"""The rules service reading the platform's bus: envelopes and presence changes reach the engine, in order,
and one event the engine cannot take does not stop the feed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.bus import EnvelopeBus, PresenceChanged
from rules import RulesSettings, setup
from tests.unit.rules.factories import env_reading, envelope, rule

pytestmark = pytest.mark.timeout(30)

HOT = rule(scope={"kind": "env_sensor"},
           condition={"type": "threshold", "field": "temperature_c", "op": ">", "value": 30})
GONE = rule(id="gone", condition={"type": "offline"})


async def test_the_feed_hands_envelopes_and_presence_to_the_engine(tmp_path: Path):
    service = setup(RulesSettings(scheduler=False), data_dir=tmp_path)
    service.engine.set_rules([HOT, GONE])
    service.engine.set_devices({"acme-1": ("M1", {})}, {"acme-1": "env_sensor"})
    bus = EnvelopeBus()
    subscription = bus.subscribe(name="rules")
    feed = asyncio.create_task(service.consume(subscription))
    bus.publish(envelope("acme-1", "env_sensor", env_reading(35.0)))
    bus.publish(PresenceChanged("acme-1", "M1", False, "disconnected", datetime.now(UTC)))
    subscription.close()
    await asyncio.wait_for(feed, 5)
    opened = [(t.action, t.rule.id) for t in service.engine.drain()]
    assert opened == [("open", "test-rule"), ("open", "gone")]


async def test_an_event_the_engine_cannot_take_is_skipped_and_the_feed_goes_on(tmp_path: Path):
    service = setup(RulesSettings(scheduler=False), data_dir=tmp_path)
    service.engine.set_rules([HOT])
    bus = EnvelopeBus()
    subscription = bus.subscribe(name="rules")
    feed = asyncio.create_task(service.consume(subscription))

    class Broken:  # looks like a presence change but is not one
        device_id, online = "acme-1", False
        at = "not a time"

    bus.publish(Broken())
    bus.publish(envelope("acme-1", "env_sensor", env_reading(35.0)))
    subscription.close()
    await asyncio.wait_for(feed, 5)
    assert [t.rule.id for t in service.engine.drain()] == ["test-rule"]


async def test_follow_ends_with_the_service_and_closes_its_subscription(tmp_path: Path):
    service = setup(RulesSettings(scheduler=False), data_dir=tmp_path)
    bus = EnvelopeBus()
    subscription = bus.subscribe(name="rules")
    service.follow(subscription)
    await service.aclose()
    assert subscription.closed and not bus.has_subscribers
