"""Pure helpers for talking InfluxDB 1.x: InfluxQL quoting, durations, response parsing.

No I/O here, so everything that decides what text goes to InfluxDB, and how its JSON comes
back as `Reading`s, is unit-testable without a server. Device ids, tags and measurement names are
user data: they only ever reach a query through `quote_string` / `quote_ident`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from influxdb_client import Point, WritePrecision

# influxdb-client's own escape tables: `line_for` must escape exactly as `Point` does.
from influxdb_client.client.write.point import _ESCAPE_KEY, _ESCAPE_MEASUREMENT, _ESCAPE_STRING

from telemetry.reading import FieldValue, Reading, from_epoch_ns, to_epoch_us

__all__ = [
    "duration_seconds",
    "field_types",
    "line_for",
    "offending_line",
    "parse_readings",
    "point_line",
    "quote_ident",
    "quote_string",
    "series_of",
    "shard_duration",
    "tag_keys",
]

# InfluxQL's scanner reads the same escapes in '…' strings and "…" identifiers.
_ESCAPES: Final = {"\\": "\\\\", "\n": "\\n"}


def _escape(text: str, quote: str) -> str:
    out = text.replace("\\", _ESCAPES["\\"]).replace(quote, "\\" + quote)
    return out.replace("\n", _ESCAPES["\n"])


def quote_string(value: str) -> str:
    """An InfluxQL string literal: `'it\\'s'`."""
    return "'" + _escape(value, "'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL quoted identifier (measurement, tag/field key, database, retention policy)."""
    return '"' + _escape(name, '"') + '"'


_DURATION_RE: Final = re.compile(r"^(\d+)(w|d|h|m|s)$")
_UNIT_SECONDS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


def duration_seconds(duration: str) -> int | None:
    """Seconds in an InfluxQL duration literal like `156w`; None for `INF`. Raises ValueError."""
    if duration.upper() == "INF":
        return None
    match = _DURATION_RE.match(duration)
    if match is None:
        raise ValueError(f"not an InfluxQL duration (e.g. '156w', '30d', 'INF'): {duration!r}")
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds < 3600:
        raise ValueError(f"InfluxDB retention must be at least 1h, got {duration!r}")
    return seconds


def shard_duration(retention_seconds: int | None) -> str:
    """InfluxDB's own default shard-group duration for a retention (it must stay below the retention)."""
    if retention_seconds is None or retention_seconds > 180 * 86_400:
        return "7d"
    if retention_seconds >= 2 * 86_400:
        return "1d"
    return "1h"


def point_line(reading: Reading) -> str:
    """One line of line protocol built with influxdb-client's `Point`: the reference `line_for` must match."""
    point = Point(reading.measurement).tag("device_id", reading.device_id)
    for key, value in reading.tags.items():
        point.tag(key, value)
    for key, fvalue in reading.fields.items():
        point.field(key, fvalue)
    if reading.seq is not None:
        point.field("seq", reading.seq)
    point.time(to_epoch_us(reading.ts) * 1000, WritePrecision.NS)
    return point.to_line_protocol()


# `Point` costs ~20 µs a line, as much as the rest of a reading's ingest. `line_for` writes the same bytes
# (checked against `point_line` in tests/unit/telemetry/test_influxql.py) from influxdb-client's own escape
# tables (imported, not copied), with the series part (measurement + sorted tags) and escaped field keys cached.
_CACHE_MAX: Final = 50_000
_series_cache: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
_key_cache: dict[str, str] = {}


def _tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped


def _series(reading: Reading) -> str:
    tags = tuple(reading.tags.items())
    key = (reading.measurement, reading.device_id, tags)
    series = _series_cache.get(key)
    if series is None:
        pairs = sorted([("device_id", reading.device_id), *tags])
        series = reading.measurement.translate(_ESCAPE_MEASUREMENT) + "".join(
            f",{k.translate(_ESCAPE_KEY)}={_tag_value(v)}" for k, v in pairs
        )
        if len(_series_cache) >= _CACHE_MAX:
            _series_cache.clear()
        _series_cache[key] = series
    return series


def _field_key(name: str) -> str:
    escaped = _key_cache.get(name)
    if escaped is None:
        escaped = name.translate(_ESCAPE_KEY)
        if len(_key_cache) >= _CACHE_MAX:
            _key_cache.clear()
        _key_cache[name] = escaped
    return escaped


def line_for(reading: Reading) -> str:
    """One line of line protocol: tags device_id + reading.tags, fields + `seq`, ns timestamp.

    Same output as `point_line` for every valid `Reading` (finite floats, int64 ints, non-empty names).
    """
    fields = reading.fields
    if reading.seq is not None:
        fields = {**fields, "seq": reading.seq}
    parts = []
    for name in sorted(fields):
        value = fields[name]
        kind = type(value)
        if kind is float:
            text = str(value)
            parts.append(f"{_field_key(name)}={text[:-2] if text.endswith('.0') else text}")
        elif kind is bool:
            parts.append(f"{_field_key(name)}={'true' if value else 'false'}")
        elif kind is int:
            parts.append(f"{_field_key(name)}={value}i")
        else:
            parts.append(f'{_field_key(name)}="{str(value).translate(_ESCAPE_STRING)}"')
    return f"{_series(reading)} {','.join(parts)} {to_epoch_us(reading.ts) * 1000}"


_PARSE_ERROR_RE: Final = re.compile(r"unable to parse '(.*?)': ", re.DOTALL)
_FIELD_ERROR_RE: Final = re.compile(
    r'input field "(?P<field>(?:[^"\\]|\\.)*)" on measurement '
    r'"(?P<measurement>(?:[^"\\]|\\.)*)"'
)


def _escape_measurement(name: str) -> str:
    return name.replace(",", r"\,").replace(" ", r"\ ")


def _escape_key(name: str) -> str:
    return name.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def offending_line(message: str, body: str) -> str | None:
    """The line of `body` an InfluxDB write error is about, as well as it can be told."""
    lines = body.split("\n")
    if "unable to parse" in message:
        for line in lines:
            if f"unable to parse '{line}'" in message:
                return line
        match = _PARSE_ERROR_RE.search(message)
        return match[1] if match else None
    match = _FIELD_ERROR_RE.search(message)
    if match:
        measurement = _escape_measurement(match["measurement"])
        key = _escape_key(match["field"]) + "="
        for line in lines:
            if line.startswith((measurement + ",", measurement + " ")) and key in line:
                return line
    return None


# ------------------------------------------------------------------ responses


def series_of(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `series` of one statement result (absent when the statement matched nothing)."""
    return list(result.get("series") or ())


def tag_keys(result: Mapping[str, Any]) -> dict[str, set[str]]:
    """`SHOW TAG KEYS` result → tag keys per measurement."""
    return {s["name"]: {row[0] for row in s.get("values") or ()} for s in series_of(result)}


def field_types(result: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """`SHOW FIELD KEYS` result → {measurement: {field: 'float'|'integer'|'boolean'|'string'}}."""
    out: dict[str, dict[str, str]] = {}
    for s in series_of(result):
        types = out.setdefault(s["name"], {})
        for key, kind in s.get("values") or ():
            # A field can have another type in another shard; the first one listed wins, and
            # values are coerced by their own JSON type anyway except int-looking floats.
            types.setdefault(key, kind)
    return out


def _coerce(value: Any, kind: str | None) -> FieldValue:
    # InfluxDB's JSON writes the float 5.0 as `5`; give back the type that was written.
    if kind == "float" and type(value) is int:
        return float(value)
    return value  # type: ignore[no-any-return]


def parse_readings(
    series: Iterable[Mapping[str, Any]],
    tags_by_measurement: Mapping[str, set[str]],
    types_by_measurement: Mapping[str, Mapping[str, str]],
) -> list[Reading]:
    """Rows of `SELECT *` series (with or without `GROUP BY "device_id"`) → Readings."""
    readings: list[Reading] = []
    for s in series:
        measurement = s["name"]
        tag_set = tags_by_measurement.get(measurement, set())
        types = types_by_measurement.get(measurement, {})
        group_tags: Mapping[str, str] = s.get("tags") or {}
        columns: list[str] = s["columns"]
        for row in s.get("values") or ():
            tags: dict[str, str] = {}
            fields: dict[str, FieldValue] = {}
            device_id = group_tags.get("device_id")
            for column, value in zip(columns[1:], row[1:], strict=True):
                if value is None or (value == "" and column in tag_set):
                    continue
                if column == "device_id":
                    device_id = value
                elif column in tag_set:
                    tags[column] = value
                else:
                    fields[column] = _coerce(value, types.get(column))
            seq = fields.pop("seq", None)
            if not device_id or not fields:
                continue  # not a point this package wrote (no device or only a seq)
            readings.append(
                Reading(device_id, measurement, from_epoch_ns(row[0]), fields, tags, seq if type(seq) is int else None)
            )
    return readings
