"""Rules are data: invalid ones are refused with a message that names the problem."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules.durations import format_duration, parse_duration
from rules.packs import BUILTIN_PACK, RuleError, dump_pack, load_pack, parse_pack, parse_rule

VALID = {
    "id": "hot-hall",
    "name": "Hall too hot",
    "scope": {"kind": "env_sensor"},
    "condition": {"type": "threshold", "field": "temperature_c", "op": ">", "value": 30, "clear": 28},
    "for": "5m",
}


def refused(data: dict) -> str:
    with pytest.raises(RuleError) as caught:
        parse_rule(data)
    return str(caught.value)


def test_a_valid_rule_parses_with_its_for_duration():
    assert parse_rule(VALID).for_ == timedelta(minutes=5)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2 days", 172800),
                                               ("1w", 604800), (45, 45), ("0.5s", 0.5), ("250ms", 0.25)])
def test_durations_read_as_people_write_them(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


def test_durations_print_back_to_the_same_value():
    assert format_duration(timedelta(seconds=5400)) == "1h30m"
    assert parse_duration(format_duration(timedelta(days=7))) == timedelta(days=7)


def test_a_bad_duration_is_named_with_its_unit():
    message = refused({**VALID, "for": "5 parsecs"})
    assert "for" in message and "unknown unit 'parsecs'" in message


def test_an_unknown_field_is_named():
    message = refused({**VALID, "severty": "critical"})
    assert "severty: unknown field" in message


def test_an_unknown_kind_is_named():
    message = refused({**VALID, "scope": {"kind": "toaster"}})
    assert "scope.kind" in message and "'toaster'" in message


def test_an_unknown_condition_type_is_named():
    message = refused({**VALID, "condition": {"type": "vibes", "field": "temperature_c"}})
    assert "condition" in message and "'vibes'" in message and "threshold" in message


def test_a_field_missing_from_the_kinds_schema_is_named_with_the_known_fields():
    message = refused({**VALID, "condition": {**VALID["condition"], "field": "temp"}})
    assert "condition.field" in message and "'temp' does not exist in env_sensor telemetry" in message
    assert "temperature_c" in message  # the fields that do exist


def test_a_channel_the_kind_does_not_have_is_refused():
    message = refused({**VALID, "scope": {"kind": "food_detector", "channel": "telemetry"}})
    assert "food_detector has no telemetry channel" in message


def test_an_event_type_the_kind_does_not_send_is_refused():
    data = {"id": "x", "name": "x", "scope": {"kind": "scale", "channel": "event", "event_type": "explosion"},
            "condition": {"type": "match"}}
    assert "no event type 'explosion'" in refused(data)


def test_array_paths_are_checked_inside_the_element():
    data = {"id": "x", "name": "x", "scope": {"kind": "cold_locker"},
            "condition": {"type": "range", "field": "compartments[].temp", "min": 1, "max": 10}}
    assert "'compartments[].temp' does not exist" in refused(data)


def test_a_value_outside_a_fields_choices_is_refused():
    data = {"id": "x", "name": "x", "scope": {"kind": "cold_locker"},
            "condition": {"type": "match", "where": [{"field": "compartments[].door", "value": "ajar"}]}}
    message = refused(data)
    assert "'ajar' is not a value of 'compartments[].door'" in message and "'open'" in message


def test_a_threshold_on_a_text_field_is_refused():
    data = {"id": "x", "name": "x", "scope": {"kind": "scale", "channel": "event", "event_type": "transaction"},
            "condition": {"type": "threshold", "field": "product_name", "op": ">", "value": 3}}
    assert "is string, not a number" in refused(data)


def test_a_change_rate_over_array_elements_is_refused_before_it_reaches_the_engine():
    data = {"id": "x", "name": "x", "scope": {"kind": "cold_locker"},
            "condition": {"type": "change_rate", "field": "compartments[].temperature_c", "limit": 5}}
    assert "condition.field: a change_rate follows one value per device, not array elements" in refused(data)


def test_a_clear_level_on_the_wrong_side_of_the_threshold_is_refused():
    data = {**VALID, "condition": {**VALID["condition"], "clear": 31}}
    assert "condition.clear: must be at or below the threshold 30" in refused(data)


def test_an_unknown_message_placeholder_is_named():
    assert "unknown placeholder {colour}" in refused({**VALID, "message": "{device_id} is {colour}"})


def test_removal_tasks_only_for_food_test_results():
    assert "actions: removal_task needs" in refused({**VALID, "actions": ["removal_task"]})


def test_a_pack_names_each_bad_rule_by_position_and_id():
    text = ("rules:\n  - {id: ok, name: ok, condition: {type: offline}}\n"
            "  - {id: broken, name: b, scope: {kind: env_sensor},\n"
            "     condition: {type: threshold, field: nope, op: '>', value: 1}}\n")
    with pytest.raises(RuleError) as caught:
        parse_pack(text)
    assert caught.value.problems == [caught.value.problems[0]]
    assert caught.value.problems[0].startswith("rules[1] (broken).condition.field:")


def test_a_pack_with_a_duplicate_id_is_refused():
    text = "- {id: a, name: a, condition: {type: offline}}\n- {id: a, name: b, condition: {type: offline}}\n"
    with pytest.raises(RuleError, match="appears twice"):
        parse_pack(text)


def test_a_pack_that_is_not_yaml_is_refused():
    with pytest.raises(RuleError, match="not valid YAML"):
        parse_pack("rules: [unclosed")


def test_the_builtin_pack_exports_and_imports_to_the_same_rules():
    rules = load_pack(BUILTIN_PACK)
    again, header = parse_pack(dump_pack(rules, name="copy"))
    assert again == rules and header["name"] == "copy"
