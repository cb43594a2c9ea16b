"""Dry-run: replaying past readings tells how often a rule would have fired, timers included."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleet.envelope import Envelope
from fleet.errors import InvalidRequest
from rules.replay import dry_run
from tests.unit.rules.factories import builtin, env_reading, envelope, rule

pytestmark = pytest.mark.timeout(30)

HOT = rule(scope={"kind": "env_sensor"}, condition={"type": "threshold", "field": "temperature_c", "op": ">",
                                                     "value": 30, "clear": 28}, **{"for": "10m"})


async def replay(items: list[Envelope]) -> AsyncIterator[Envelope]:
    for item in items:
        yield item


def week_of_readings() -> list[Envelope]:
    """A reading every 5 min for 7 days; every afternoon 14:00–15:00 it is 33 °C, else 22 °C."""
    items = []
    for second in range(0, 7 * 86400, 300):
        hot = 14 * 3600 <= (second + 8 * 3600) % 86400 < 15 * 3600
        items.append(envelope("ENV-1", "env_sensor", env_reading(33.0 if hot else 22.0), at=second))
    return items


async def test_a_week_with_one_hot_hour_a_day_fires_seven_times():
    result = await dry_run(HOT, replay(week_of_readings()))
    assert (result.envelopes, result.fired, result.resolved) == (2016, 7, 7)
    assert result.by_device == {"ENV-1": 7}
    assert all(f.resolved_at is not None and f.resolved_at > f.opened_at for f in result.firings)


async def test_a_pending_for_duration_fires_on_the_replay_clock_at_the_end():
    items = [envelope("ENV-1", "env_sensor", env_reading(35.0), at=0),
             envelope("ENV-1", "env_sensor", env_reading(35.0), at=60)]
    short = await dry_run(HOT, replay(items))
    assert short.fired == 0
    longer = await dry_run(HOT, replay(items), end=items[-1].ts.replace(minute=items[-1].ts.minute + 15))
    assert longer.fired == 1


async def test_event_rules_count_every_matching_event():
    items = [envelope("SC-1", "scale", {"type": "tamper", "reason": "seal_opened"}, at=n * 60) for n in range(4)]
    result = await dry_run(builtin("scale-tamper"), replay(items))
    assert result.fired == 4


async def test_presence_rules_are_not_replayable():
    with pytest.raises(InvalidRequest, match="offline rule does not read them"):
        await dry_run(builtin("device-offline"), replay([]))
