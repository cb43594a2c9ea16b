"""Alert lifecycle on the real registry: open → acknowledged → resolved, deduplicated, archived step by step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleet.errors import Conflict
from rules import RulesService
from rules.models import Alert, AlertEvent, AlertStatus
from tests.factories import eventually
from tests.unit.rules.factories import env_reading, envelope, food_result

pytestmark = pytest.mark.timeout(60)

HOT = {"scope": {"kind": "env_sensor"}, "condition": {"type": "threshold", "field": "temperature_c", "op": ">",
                                                       "value": 30, "clear": 28}, "severity": "warning"}


def now_plus(seconds: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def alert_of(rule_id: str, device_id: str, status: AlertStatus | None = None) -> Alert | None:
    query = Alert.filter(rule_id=rule_id, device_id=device_id)
    if status is not None:
        query = query.filter(status=status)
    return await query.order_by("-id").first()


async def test_an_alert_goes_open_acknowledged_resolved_with_who_when_and_why(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-lifecycle", "name": "Hot", **HOT})
    rules_service.process(envelope("ENV-L1", "env_sensor", env_reading(35), at=now_plus()))
    alert = await eventually(lambda: alert_of("hot-lifecycle", "ENV-L1"))
    assert alert.status == AlertStatus.OPEN and alert.value == "35"

    await rules_service.alerts.acknowledge(alert.id, "user:li", "on my way")
    await rules_service.alerts.assign(alert.id, "wang.technician", "user:li", "check the fan")
    await rules_service.alerts.comment(alert.id, "user:wang", "fan belt broken")
    await rules_service.alerts.resolve(alert.id, "user:wang", "belt replaced")

    detail = await rules_service.alerts.detail(alert.id)
    assert [(e.action, e.actor, e.comment) for e in detail.events] == [
        ("opened", "rules-engine", detail.message),
        ("acknowledged", "user:li", "on my way"),
        ("assigned", "user:li", "check the fan"),
        ("commented", "user:wang", "fan belt broken"),
        ("resolved", "user:wang", "belt replaced"),
    ]
    assert (detail.status, detail.resolution, detail.assigned_to) == ("resolved", "manual", "wang.technician")
    assert detail.acknowledged_by == "user:li" and detail.resolved_at >= detail.acknowledged_at


async def test_repeats_count_on_one_open_alert(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-dedupe", "name": "Hot", **HOT})
    for n in range(5):
        rules_service.process(envelope("ENV-D1", "env_sensor", env_reading(33 + n), at=now_plus(n)))
    await rules_service.flush()
    alerts = await Alert.filter(rule_id="hot-dedupe", device_id="ENV-D1")
    assert [(a.occurrences, a.value, a.last_value) for a in alerts] == [(5, "33", "37")]


async def test_an_alert_resolves_itself_when_the_condition_clears(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-auto", "name": "Hot", **HOT})
    rules_service.process(envelope("ENV-A1", "env_sensor", env_reading(35), at=now_plus()))
    rules_service.process(envelope("ENV-A1", "env_sensor", env_reading(29), at=now_plus(1)))  # in the band
    await rules_service.flush()
    assert (await alert_of("hot-auto", "ENV-A1")).status == AlertStatus.OPEN
    rules_service.process(envelope("ENV-A1", "env_sensor", env_reading(27), at=now_plus(2)))
    alert = await eventually(lambda: alert_of("hot-auto", "ENV-A1", AlertStatus.RESOLVED))
    assert (alert.resolution, alert.resolved_by, alert.open_key) == ("auto", "rules-engine", None)


async def test_handling_a_resolved_alert_again_is_a_conflict(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-conflict", "name": "Hot", **HOT})
    rules_service.process(envelope("ENV-C1", "env_sensor", env_reading(35), at=now_plus()))
    alert = await eventually(lambda: alert_of("hot-conflict", "ENV-C1"))
    await rules_service.alerts.resolve(alert.id, "user:li")
    with pytest.raises(Conflict, match="already resolved"):
        await rules_service.alerts.resolve(alert.id, "user:li")
    with pytest.raises(Conflict, match="is resolved"):
        await rules_service.alerts.acknowledge(alert.id, "user:li")


async def test_a_condition_still_holding_after_a_manual_resolve_opens_a_new_alert(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-reopen", "name": "Hot", **HOT})
    rules_service.process(envelope("ENV-R1", "env_sensor", env_reading(35), at=now_plus()))
    first = await eventually(lambda: alert_of("hot-reopen", "ENV-R1"))
    await rules_service.alerts.resolve(first.id, "user:li", "looked fine to me")
    rules_service.process(envelope("ENV-R1", "env_sensor", env_reading(36), at=now_plus(1)))
    second = await eventually(lambda: alert_of("hot-reopen", "ENV-R1", AlertStatus.OPEN))
    assert second.id != first.id


async def test_an_unacknowledged_alert_escalates(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-escalate", "name": "Hot", **HOT,
                                     "escalation": [{"after": "0.5s", "severity": "critical"}]})
    rules_service.process(envelope("ENV-E1", "env_sensor", env_reading(35), at=now_plus()))
    escalated = await eventually(lambda: Alert.filter(rule_id="hot-escalate", escalation_level=1).first())
    assert escalated.severity == "critical"
    event = await AlertEvent.filter(alert_id=escalated.id, action="escalated").first()
    assert event.data["severity"] == ["warning", "critical"]


async def test_an_acknowledged_alert_does_not_escalate(rules_service: RulesService):
    await rules_service.create_rule({"id": "hot-quiet", "name": "Hot", **HOT,
                                     "escalation": [{"after": "0.5s", "severity": "critical"}]})
    rules_service.process(envelope("ENV-Q1", "env_sensor", env_reading(35), at=now_plus()))
    alert = await eventually(lambda: alert_of("hot-quiet", "ENV-Q1"))
    await rules_service.alerts.acknowledge(alert.id, "user:li")
    await rules_service.alerts.escalate_due({"hot-quiet": rules_service.engine.rules["hot-quiet"].rule},
                                            now=now_plus(5))
    assert (await Alert.get(id=alert.id)).severity == "warning"


async def test_a_change_that_cannot_be_recorded_is_undone_alone(rules_service: RulesService):
    """One write transaction holds many alert changes; one that fails half-way (here: a detector result whose
    value is not a number, so its removal task cannot be made) leaves no half-written alert and is not
    announced, while the change next to it is recorded and announced."""
    await rules_service.create_rule({"id": "hot-chunk", "name": "Hot", **HOT})
    subscription = rules_service.stream.subscribe(  # other tests' rules fire on ENV-GOOD too
        lambda m: m["alert"]["rule_id"] in ("hot-chunk", "food-test-failed"))
    broken = {**food_result(False, "R-BAD"), "value": "not a number"}  # past ingest's schema only in a test
    rules_service.process(envelope("FD-BAD", "food_detector", broken, at=now_plus()))
    rules_service.process(envelope("ENV-GOOD", "env_sensor", env_reading(35), at=now_plus()))
    await rules_service.flush()  # both changes in one chunk
    assert await Alert.filter(device_id="ENV-GOOD", rule_id="hot-chunk").exists()
    assert not await Alert.filter(device_id="FD-BAD").exists()
    assert not await AlertEvent.filter(alert__device_id="FD-BAD").exists()
    message = await subscription.get()
    assert message is not None and message["alert"]["device_id"] == "ENV-GOOD"
    assert subscription.pending == 0
