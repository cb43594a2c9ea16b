"""InfluxQL quoting, durations, line building, error attribution and response parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry import influxql
from telemetry.influxql import quote_ident, quote_string
from telemetry.reading import Reading, from_epoch_us

TS = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TS_NS = 1_772_366_400_123_456_000


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("dev-1", "'dev-1'"),
        ("it's", r"'it\'s'"),
        ("back\\slash", r"'back\\slash'"),
        ("\\'", r"'\\\''"),
        ("x' OR 'a'='a", r"'x\' OR \'a\'=\'a'"),
        ('say "hi"', "'say \"hi\"'"),
        ("new\nline", r"'new\nline'"),
        ("marché 🍅", "'marché 🍅'"),
    ],
)
def test_quote_string(raw: str, quoted: str) -> None:
    assert quote_string(raw) == quoted


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("env_sensor.telemetry", '"env_sensor.telemetry"'),
        ('a"b', r'"a\"b"'),
        ("a\\b", r'"a\\b"'),
        ("it's", '"it\'s"'),
    ],
)
def test_quote_ident(raw: str, quoted: str) -> None:
    assert quote_ident(raw) == quoted


def test_durations() -> None:
    assert influxql.duration_seconds("156w") == 156 * 7 * 86400
    assert influxql.duration_seconds("30d") == 30 * 86400
    assert influxql.duration_seconds("INF") is None
    for bad in ("", "10", "1y", "30m", "1d; DROP DATABASE x"):
        with pytest.raises(ValueError):
            influxql.duration_seconds(bad)
    assert influxql.shard_duration(86400) == "1h"
    assert influxql.shard_duration(30 * 86400) == "1d"
    assert influxql.shard_duration(156 * 7 * 86400) == "7d"
    assert influxql.shard_duration(None) == "7d"


def test_line_for_puts_device_id_in_tags_and_seq_in_fields() -> None:
    r = Reading("dev 1,x=y", "env sensor", TS, {"t": 1.5, "n": 3, "ok": True, "s": 'a "b"'}, {"market": "m1"}, seq=42)
    line = influxql.line_for(r)
    assert line == (
        r'env\ sensor,device_id=dev\ 1\,x\=y,market=m1 n=3i,ok=true,s="a \"b\"",seq=42i,t=1.5 '
        f"{TS_NS}"
    )


def test_offending_line_for_parse_and_type_errors() -> None:
    body = 'm,device_id=a f=1 1\nm,device_id=b f="x" 2\nother,device_id=c g=1i 3'
    msg = "partial write: unable to parse 'm,device_id=b f=\"x\" 2': bad timestamp dropped=1"
    assert influxql.offending_line(msg, body) == 'm,device_id=b f="x" 2'
    msg = (
        'partial write: field type conflict: input field "g" on measurement "other" is type '
        "integer, already exists as type float dropped=1"
    )
    assert influxql.offending_line(msg, body) == "other,device_id=c g=1i 3"
    assert influxql.offending_line("something else", body) is None


def test_parse_readings_splits_tags_fields_and_restores_types() -> None:
    tags = influxql.tag_keys({"series": [{"name": "m", "columns": ["tagKey"], "values": [["device_id"], ["market"]]}]})
    types = influxql.field_types(
        {
            "series": [
                {
                    "name": "m",
                    "columns": ["fieldKey", "fieldType"],
                    "values": [["f", "float"], ["n", "integer"], ["seq", "integer"], ["s", "string"]],
                }
            ]
        }
    )
    series = [
        {
            "name": "m",
            "columns": ["time", "device_id", "f", "market", "n", "s", "seq"],
            "values": [
                [TS_NS, "dev-1", 5, "m1", 7, "txt", 9],
                [TS_NS + 1000, "dev-1", 2.5, None, None, None, None],
            ],
        }
    ]
    a, b = influxql.parse_readings(series, tags, types)
    assert a == Reading("dev-1", "m", TS, {"f": 5.0, "n": 7, "s": "txt"}, {"market": "m1"}, 9)
    assert type(a.fields["f"]) is float
    assert b.fields == {"f": 2.5} and b.tags == {} and b.seq is None


def test_parse_readings_with_group_by_device() -> None:
    series = [{"name": "m", "tags": {"device_id": "it's"}, "columns": ["time", "f"], "values": [[0, 1]]}]
    (r,) = influxql.parse_readings(series, {"m": {"device_id"}}, {"m": {"f": "integer"}})
    assert r.device_id == "it's" and r.fields == {"f": 1}


# ---------------------------------------------------------------- the fast encoder writes what Point writes

_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t"), min_size=1, max_size=12)
_key_names = _names.filter(lambda n: not n.endswith("\\") and n not in ("seq", "time", "device_id"))
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(
    device_id=_key_names,
    measurement=_key_names.filter(lambda n: not n.startswith("#")),
    fields=st.dictionaries(_key_names, _values, min_size=1, max_size=5),
    tags=st.dictionaries(_key_names, _key_names, max_size=3),
    seq=st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1)),
    us=st.integers(min_value=0, max_value=4_000_000_000_000_000),
)
def test_line_for_writes_exactly_what_influxdb_client_point_writes(
    device_id: str, measurement: str, fields: dict[str, object], tags: dict[str, str], seq: int | None, us: int
) -> None:
    tags = {k: v for k, v in tags.items() if k not in fields}
    reading = Reading(device_id, measurement, from_epoch_us(us), fields, tags, seq)  # type: ignore[arg-type]
    assert influxql.line_for(reading) == influxql.point_line(reading)
    assert influxql.line_for(reading) == influxql.point_line(reading)  # and again from the caches


def test_line_for_escapes_like_point_on_awkward_names_and_values() -> None:
    when = datetime(2026, 11, 23, 8, 15, 2, 120000, tzinfo=UTC)
    reading = Reading(
        "dev 1,a=b", "env sensor,x.telemetry",
        when,
        {"temp c": 5.0, "a=b": 1e21, "small": 1e-7, "neg": -0.0, "on": True, "n": -3, "s": 'say "hi" \\ ok'},
        {"market": "M 1,=x", "kind": "env"},
        7,
    )
    assert influxql.line_for(reading) == influxql.point_line(reading)
