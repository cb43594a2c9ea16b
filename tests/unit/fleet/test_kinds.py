"""The kind catalog: every kind validates what its devices send and refuses what they must not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet.kinds import CATALOG, DeviceKind, spec_for, validate_payload

SHA = "ab" * 32


def test_every_kind_has_telemetry_or_events_and_commands() -> None:
    assert set(CATALOG) == set(DeviceKind)
    for spec in CATALOG.values():
        assert spec.telemetry is not None or spec.event is not None, spec.kind
        assert validate_payload(spec.kind, "command", {"command": "ping"}).command == "ping"
        assert spec.clauses, f"{spec.kind} cites no clause"


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known kinds: .*inspection_tablet.*broadcast"):
        spec_for("toaster")


def test_a_patrol_is_started_recorded_photographed_and_finished() -> None:
    kind = "inspection_tablet"
    started = validate_payload(kind, "event", {"type": "patrol_started", "patrol_id": "P1", "inspector": "li",
                                               "route": ["A01", "A02"]})
    record = validate_payload(kind, "event", {"type": "patrol_record", "patrol_id": "P1", "stall_code": "A01",
                                              "items": {"price_tag": True, "hygiene": False}, "result": "problem"})
    photo = validate_payload(kind, "event", {"type": "problem_photo", "stall_code": "A01", "category": "hygiene",
                                             "photo_sha256": SHA})
    finished = validate_payload(kind, "event", {"type": "patrol_finished", "patrol_id": "P1", "stalls_checked": 2,
                                                "problems": 1})
    assert (started.route, record.items["hygiene"], photo.photo_sha256, finished.problems) == (
        ["A01", "A02"], False, SHA, 1)
    track = validate_payload(kind, "telemetry", {"battery_pct": 80, "lat": 22.54, "lon": 114.05, "patrol_id": "P1"})
    assert track.lat == 22.54


@pytest.mark.parametrize("bad", [
    {"type": "problem_photo", "category": "hygiene", "photo_sha256": "not-a-hash"},
    {"type": "patrol_record", "patrol_id": "P1", "stall_code": "A01", "result": "fine"},
    {"type": "patrol_finished", "patrol_id": "P1", "stalls_checked": -1, "problems": 0},
])
def test_a_malformed_patrol_event_is_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        validate_payload("inspection_tablet", "event", bad)


def test_a_broadcast_timetable_and_an_emergency_announcement() -> None:
    schedule = validate_payload("broadcast", "command", {"command": "set_schedule", "entries": [
        {"at": "07:30", "programme": "opening", "source": "mp3", "loop_minutes": 30},
        {"at": "19:00", "programme": "closing"}]})
    assert [e.at for e in schedule.entries] == ["07:30", "19:00"]
    alarm = validate_payload("broadcast", "command", {"command": "play_announcement", "programme": "fire",
                                                      "text": "请有序疏散", "priority": "emergency"})
    assert alarm.priority == "emergency" and alarm.zones == []
    with pytest.raises(ValidationError):
        validate_payload("broadcast", "command", {"command": "set_schedule", "entries": [{"at": "25:00",
                                                                                          "programme": "x"}]})
    with pytest.raises(ValidationError):
        validate_payload("broadcast", "telemetry", {"playing": True, "source": "cassette", "volume_pct": 50})
