"""A failed food-safety test opens an alert and a removal task for the stall; closing the task archives it
(BJ 6.1.1.8, 5.3.6)."""

from __future__ import annotations

import pytest

from rules import RulesService
from rules.models import Alert, AlertEvent, AlertStatus, RemovalTask, TaskStatus
from tests.factories import eventually
from tests.unit.rules.factories import envelope, food_result

pytestmark = pytest.mark.timeout(60)


async def test_a_failed_test_opens_an_alert_and_a_removal_task(rules_service: RulesService):
    rules_service.process(envelope("FD-1", "food_detector", food_result(False, "R-100", stall="B-07"), market="M7"))
    task = await eventually(lambda: RemovalTask.filter(result_id="FD-1:R-100").first())
    alert = await Alert.get(id=task.alert_id)
    assert (task.stall_no, task.sample_name, task.item, task.value, task.limit) == (
        "B-07", "spinach", "organophosphate", 62.5, 50.0)
    assert (alert.rule_id, alert.severity, alert.market) == ("food-test-failed", "critical", "M7")
    assert "remove it from sale" in alert.message and "spinach" in alert.message


async def test_a_passed_test_opens_nothing(rules_service: RulesService):
    rules_service.process(envelope("FD-2", "food_detector", food_result(True, "R-200")))
    await rules_service.flush()
    assert not await RemovalTask.filter(device_id="FD-2").exists()
    assert not await Alert.filter(device_id="FD-2").exists()


async def test_each_failed_sample_gets_its_own_task_and_a_replay_does_not_duplicate_it(rules_service: RulesService):
    for result_id in ("R-301", "R-302", "R-301"):
        rules_service.process(envelope("FD-3", "food_detector", food_result(False, result_id, stall="C-01")))
    await rules_service.flush()
    assert sorted(await RemovalTask.filter(device_id="FD-3").values_list("result_id", flat=True)) == [
        "FD-3:R-301", "FD-3:R-302"]
    [alert] = await Alert.filter(device_id="FD-3")
    assert alert.occurrences == 3


async def test_closing_the_task_archives_it_and_resolves_the_alert(rules_service: RulesService):
    rules_service.process(envelope("FD-4", "food_detector", food_result(False, "R-400", stall="D-02")))
    task = await eventually(lambda: RemovalTask.filter(result_id="FD-4:R-400").first())
    closed = await rules_service.alerts.close_removal_task(task.id, "user:inspector-zhao",
                                                           "12 kg spinach removed and destroyed", "witnessed")
    assert (closed.status, closed.closed_by) == (TaskStatus.ARCHIVED, "user:inspector-zhao")
    assert closed.action_taken == "12 kg spinach removed and destroyed"
    alert = await Alert.get(id=task.alert_id)
    assert (alert.status, alert.resolved_by) == (AlertStatus.RESOLVED, "user:inspector-zhao")
    actions = await AlertEvent.filter(alert_id=alert.id).order_by("id").values_list("action", flat=True)
    assert actions == ["opened", "removal_task_opened", "removal_task_closed", "resolved"]
    archived = await rules_service.alerts.removal_tasks("archived")
    assert task.id in [t.id for t in archived]
