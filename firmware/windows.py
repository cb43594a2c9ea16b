"""Maintenance windows: the hours of a market's local day in which devices may start an update. Pure.

Markets trade from early morning; an update that reboots a scale mid-sale costs a vendor money and breaks the
transaction record (BJ 5.3.5 a), so campaigns usually run at night, e.g. `22:00-06:00` market time. A window
that crosses midnight belongs to the day it opens on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]|24):([0-5]\d)\s*$")


class InvalidWindow(ValueError):
    """Not a window of the form HH:MM-HH:MM."""


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InvalidWindow(f"unknown time zone {name!r}") from err


@dataclass(frozen=True)
class MaintenanceWindow:
    start: time
    end: time  # exclusive; equal to start means the whole day

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        match = _WINDOW.match(text or "")
        if match is None:
            raise InvalidWindow(f"{text!r} is not a window; write HH:MM-HH:MM in market time, e.g. 22:00-06:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h2 == 24 and m2 != 0:
            raise InvalidWindow(f"{text!r}: 24:{m2:02d} is not a time")
        return cls(time(h1, m1), time(0, 0) if h2 == 24 else time(h2, m2))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def is_open(self, at: datetime, tz: ZoneInfo | str) -> bool:
        """Whether `at` (an aware instant) falls inside the window in time zone `tz`."""
        local = at.astimezone(zone(tz) if isinstance(tz, str) else tz).time().replace(tzinfo=None)
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_opening(self, at: datetime, tz: ZoneInfo | str) -> datetime:
        """The first instant at or after `at` at which the window is open (UTC)."""
        if self.is_open(at, tz):
            return at.astimezone(UTC)
        tzinfo = zone(tz) if isinstance(tz, str) else tz
        local = at.astimezone(tzinfo)
        opening = datetime.combine(local.date(), self.start, tzinfo)
        if opening <= local:
            opening = datetime.combine(local.date() + timedelta(days=1), self.start, tzinfo)
        return opening.astimezone(UTC)
