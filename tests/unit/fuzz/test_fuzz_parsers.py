"""Property tests on the parsers every untrusted byte passes through (issue 11, fuzzing): the uplink codec
(MQTT/CoAP/HTTP bodies), the rule parser (rules and packs from the API and from files), and kind schemas.
Whatever comes in, each answers with a result or its own documented error — never another exception, which
in a server would be a crashed task or a 500."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from broker.codec import MessageError, UplinkError, decode_uplink
from fleet.envelope import DeviceMessage
from fleet.kinds import CATALOG, Channel, validate_payload
from rules.packs import RuleError, parse_pack, parse_rule

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
message_like = st.fixed_dictionaries({}, optional={
    "seq": st.integers(min_value=-5, max_value=2**64) | json_scalars,
    "ts": st.integers() | st.text(max_size=30) | st.floats(allow_nan=True, allow_infinity=True) | st.none(),
    "payload": json_values,
    "extra": json_scalars,
})


def check_decoded(body: bytes) -> None:
    try:
        messages = decode_uplink(body)
    except UplinkError as err:
        assert err.reason in ("malformed", "oversized") and str(err)
        return
    assert messages
    for message in messages:
        assert isinstance(message, DeviceMessage | MessageError)
        if isinstance(message, DeviceMessage):
            assert isinstance(message.seq, int) and 0 <= message.seq < 2**63 and isinstance(message.payload, dict)


@FAST
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_the_codec(body: bytes) -> None:
    check_decoded(body)


@FAST
@given(message_like | st.lists(message_like, max_size=5) | json_values)
def test_json_and_cbor_of_any_shape_decode_or_are_refused_with_a_reason(value: Any) -> None:
    check_decoded(json.dumps(value).encode())
    check_decoded(cbor2.dumps(value))


@FAST
@given(st.sampled_from(sorted(CATALOG)), st.sampled_from([Channel.TELEMETRY, Channel.EVENT, Channel.STATE, "command"]),
       json_values)
def test_kind_schemas_accept_or_raise_a_validation_error(kind: Any, channel: Any, payload: Any) -> None:
    try:
        validate_payload(kind, channel, payload)
    except ValidationError:
        pass
    except KeyError as err:  # the kind has no such channel (food detectors send no telemetry)
        assert "has no" in str(err)


rule_like = st.fixed_dictionaries({}, optional={
    "id": st.text(max_size=12) | json_scalars,
    "name": st.text(max_size=12),
    "severity": st.sampled_from(["info", "warning", "critical", "loud"]) | json_scalars,
    "scope": st.dictionaries(st.sampled_from(["kind", "channel", "market", "labels", "event_type"]), json_values,
                             max_size=3),
    "condition": st.dictionaries(st.sampled_from(["type", "field", "min", "max", "op", "value", "where", "minutes"]),
                                 json_values, max_size=4) | json_values,
    "for": st.text(max_size=6) | st.integers(),
    "message": st.text(max_size=20),
})


@FAST
@given(rule_like | json_values)
def test_any_rule_document_parses_or_names_its_problems(data: Any) -> None:
    try:
        parse_rule(data)
    except RuleError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


@FAST
@given(st.text(max_size=300) | st.builds(lambda rules: yaml.safe_dump({"name": "p", "rules": rules}),
                                         st.lists(rule_like, max_size=3)))
def test_any_pack_text_parses_or_names_its_problems(text: str) -> None:
    try:
        parse_pack(text)
    except RuleError as err:
        assert err.problems
