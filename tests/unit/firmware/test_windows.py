"""Maintenance windows in market time, across midnight and time zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from firmware.windows import InvalidWindow, MaintenanceWindow

NIGHT = MaintenanceWindow.parse("22:00-06:00")


def shanghai(hour: int, minute: int = 0) -> datetime:
    # Asia/Shanghai is UTC+8 all year
    return datetime(2026, 11, 23, (hour - 8) % 24, minute, tzinfo=UTC)


@pytest.mark.parametrize(("hour", "minute", "open_"), [(21, 59, False), (22, 0, True), (2, 0, True),
                                                       (5, 59, True), (6, 0, False), (12, 0, False)])  # fmt: skip
def test_a_night_window_crosses_midnight(hour: int, minute: int, open_: bool) -> None:
    assert NIGHT.is_open(shanghai(hour, minute), "Asia/Shanghai") is open_


def test_the_same_instant_differs_by_market_zone() -> None:
    at = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai, 10:00 in New York
    assert NIGHT.is_open(at, "Asia/Shanghai")
    assert not NIGHT.is_open(at, "America/New_York")


def test_a_day_window_and_the_whole_day() -> None:
    assert MaintenanceWindow.parse("13:00-14:30").is_open(shanghai(14, 0), "Asia/Shanghai")
    assert MaintenanceWindow.parse("00:00-24:00").is_open(shanghai(9), "Asia/Shanghai")


def test_next_opening_is_tonight() -> None:
    assert NIGHT.next_opening(shanghai(12), "Asia/Shanghai") == shanghai(22)


@pytest.mark.parametrize("text", ["22-06", "25:00-06:00", "22:00", "", "22:00-24:30"])
def test_malformed_windows_are_refused(text: str) -> None:
    with pytest.raises(InvalidWindow):
        MaintenanceWindow.parse(text)
