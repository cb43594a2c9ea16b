"""Durations as people write them in rule files: `90s`, `5m`, `1h30m`, `2 days`, `1w`.

A bare number means seconds (what a JSON client sends); anything else must carry a unit, so that a typo like
`5 parsecs` is refused with the units that are understood instead of being read as something else.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = ["Duration", "format_duration", "parse_duration"]

_UNITS: dict[str, float] = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")
_HINT = "use a number with s, m, h, d or w, e.g. '90s', '5m', '1h30m', '7d'"
_MAX_SECONDS = 10 * 366 * 86400  # no rule waits longer than ten years; beyond this is a typo (or an overflow)


def parse_duration(value: Any) -> timedelta:
    """`timedelta` from a number of seconds or a text like `1h30m`; ValueError names what is wrong."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: {_HINT}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError(f"bad duration '': {_HINT}")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            seconds, pos = 0.0, 0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                unit = match.group(2).lower()
                if unit not in _UNITS:
                    raise ValueError(f"bad duration {value!r}: unknown unit {match.group(2)!r}; {_HINT}")
                seconds += float(match.group(1)) * _UNITS[unit]
                pos = match.end()
            if pos != len(text) or pos == 0:
                raise ValueError(f"bad duration {value!r}: {_HINT}")
    else:
        raise ValueError(f"bad duration {value!r}: {_HINT}")
    if seconds < 0:
        raise ValueError(f"bad duration {value!r}: must not be negative")
    if not seconds <= _MAX_SECONDS:  # also NaN and infinity
        raise ValueError(f"bad duration {value!r}: longer than ten years")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest text `parse_duration` reads back to the same value: `90s` → `1m30s`."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    if total != int(total):
        return f"{round(total * 1000)}ms" if total < 1 else f"{total:g}s"
    rest, parts = int(total), []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
