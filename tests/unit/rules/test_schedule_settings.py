"""The `rules.schedules` setting: naming one job changes that job only, a job can be turned off, and a job
name that does not exist is refused with the names that do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from rules import RulesSettings
from rules.scheduler import DEFAULT_SCHEDULES, RulesScheduler


async def never(name, at):  # the dispatch; these tests never start the scheduler
    return ""


def test_naming_one_job_keeps_the_others():
    settings = RulesSettings(schedules={"metrology": {"cron": "0 7 * * *"}})
    assert settings.schedules["metrology"].cron == "0 7 * * *"
    assert set(settings.schedules) == set(DEFAULT_SCHEDULES)
    assert settings.schedules["offline-sweep"].every == timedelta(minutes=2)


def test_a_job_turned_off_is_not_scheduled():
    settings = RulesSettings(schedules={"housekeeping": {"enabled": False}})
    assert sorted(RulesScheduler(settings.schedules, never).schedules) == [
        "data-quality-report", "metrology", "offline-sweep"]


def test_an_unknown_job_is_refused_naming_the_known_ones():
    with pytest.raises(ValidationError, match="unknown scheduled check 'metrolgy'; known: offline-sweep, metrology"):
        RulesSettings(schedules={"metrolgy": {"every": "1h"}})


def test_a_bad_cron_is_refused_with_the_reason():
    with pytest.raises(ValidationError, match=r"cron: .*higher than the maximum"):
        RulesSettings(schedules={"metrology": {"cron": "0 77 * * *"}})
