"""PresenceTracker with an injected clock: the sweep, the last will, the retained status, any sign of life."""

from __future__ import annotations

from broker.bus import EnvelopeBus, PresenceChanged, Subscription
from broker.directory import DeviceInfo
from broker.presence import PresenceTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker() -> tuple[PresenceTracker, Clock, Subscription]:
    bus = EnvelopeBus()
    clock = Clock()
    return PresenceTracker(bus, write_db=False, clock=clock), clock, bus.subscribe(kinds=(PresenceChanged,))


def drain(sub: Subscription) -> list[PresenceChanged]:
    events = []
    while len(sub):
        events.append(sub.get_nowait())
    return events


def test_a_silent_device_is_offline_after_one_and_a_half_keepalives_not_before() -> None:
    presence, clock, sub = tracker()
    presence.connected(DeviceInfo("acme-1", "scale", "M1", keepalive_s=60))
    clock.now += 89
    assert presence.sweep() == []
    assert presence.is_online("acme-1")
    clock.now += 2  # 91 s > 1.5 × 60 s
    assert presence.sweep() == ["acme-1"]
    assert [(e.device_id, e.online, e.reason) for e in drain(sub)] == [("acme-1", True, "connected"),
                                                                  ("acme-1", False, "silent")]


def test_any_sign_of_life_restarts_the_silence_count() -> None:
    presence, clock, _ = tracker()
    presence.connected(DeviceInfo("acme-2", "scale", "M1", keepalive_s=10))
    for _ in range(10):
        clock.now += 14
        presence.seen("acme-2")
        assert presence.sweep() == []
    assert presence.last_seen("acme-2") is not None


def test_last_will_and_retained_status_drive_presence() -> None:
    presence, _, sub = tracker()
    presence.status("acme-3", b"online")
    assert presence.is_online("acme-3")
    presence.status("acme-3", b"offline")  # the will Mosquitto publishes for a vanished device
    assert not presence.is_online("acme-3")
    presence.status("acme-3", b"garbage")  # ignored, never an error
    assert [(e.online, e.reason) for e in drain(sub)] == [(True, "status"), (False, "will")]
    assert presence.changes == 2


def test_repeated_states_publish_no_events() -> None:
    presence, _, sub = tracker()
    info = DeviceInfo("acme-4", "scale", "M1")
    presence.connected(info)
    presence.connected(info)
    presence.seen("acme-4")
    presence.disconnected("acme-4")
    presence.disconnected("acme-4")
    assert [e.online for e in drain(sub)] == [True, False]
    assert presence.online_count() == 0
