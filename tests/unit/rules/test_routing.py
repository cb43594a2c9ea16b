"""Routing: what a role allows, what preferences narrow, quiet hours, and the signature receivers check."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rules.delivery import body_bytes, sign, verify_signature
from rules.models import Recipient
from rules.routing import Router, alert_topic
from rules.schemas import RecipientCreate

ALERT = {"id": 7, "rule_id": "fire-alarm", "rule_name": "Fire alarm", "category": "safety", "severity": "critical",
         "market": "M1", "kind": "fire_panel", "message": "FIRE", "device_id": "FP-1", "element": "Z1"}
HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 16}


def recipient(n: int, role: str, markets: list[str] | None = None, **prefs) -> Recipient:
    data = RecipientCreate(name=f"r{n}", role=role, markets=markets or [], channels=[HOOK], preferences=prefs)
    return Recipient(id=n, **data.model_dump(mode="json"))


def router(*rows: Recipient) -> Router:
    routing = Router(timezone="Asia/Shanghai", mqtt_enabled=True)
    routing.set_recipients(rows)
    return routing


def test_a_manager_receives_alerts_of_their_own_markets_only():
    routing = router(recipient(1, "manager", ["M1"]), recipient(2, "manager", ["M2"]))
    assert [r.name for r in routing.recipients_for(ALERT)] == ["r1"]


def test_a_maintainer_does_not_receive_safety_alerts():
    routing = router(recipient(1, "maintainer"))
    assert routing.recipients_for(ALERT) == []
    assert len(routing.recipients_for({**ALERT, "category": "device"})) == 1


def test_preferences_narrow_by_severity_and_kind():
    routing = router(recipient(1, "admin", severities=["warning"]), recipient(2, "admin", kinds=["scale"]),
                     recipient(3, "admin", severities=["critical"], kinds=["fire_panel"]))
    assert [r.name for r in routing.recipients_for(ALERT)] == ["r3"]


def test_escalation_roles_pick_the_next_recipients():
    routing = router(recipient(1, "manager", ["M1"]), recipient(2, "admin"))
    assert [r.name for r in routing.recipients_for(ALERT, roles=["admin"])] == ["r2"]


def test_a_manager_without_markets_is_refused():
    with pytest.raises(ValidationError, match="a manager receives alerts of their own markets"):
        RecipientCreate(name="m", role="manager", channels=[HOOK])


def test_preferences_cannot_widen_the_role():
    with pytest.raises(ValidationError, match="a maintainer does not receive safety"):
        RecipientCreate(name="m", role="maintainer", channels=[HOOK], preferences={"categories": ["safety"]})


def test_quiet_hours_delay_a_warning_until_the_morning():
    routing = router(recipient(1, "admin", quiet_hours={"start": "22:00", "end": "07:00"}))
    night = datetime(2025, 3, 1, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    [delivery] = routing.deliveries({**ALERT, "severity": "warning"}, "opened", now=night)
    assert delivery.next_attempt_at == datetime(2025, 3, 1, 23, 0, tzinfo=UTC)  # 07:00 Shanghai


def test_critical_alerts_ignore_quiet_hours():
    routing = router(recipient(1, "admin", quiet_hours={"start": "22:00", "end": "07:00"}))
    night = datetime(2025, 3, 1, 15, 30, tzinfo=UTC)
    deliveries = routing.deliveries(ALERT, "opened", now=night)
    assert [d.next_attempt_at for d in deliveries] == [night]


def test_mqtt_goes_once_per_change_to_the_market_and_severity_topic():
    rows = [recipient(n, "admin") for n in (1, 2)]
    for row in rows:
        row.channels = [{"type": "mqtt"}]
    deliveries = router(*rows).deliveries(ALERT, "opened")
    assert [(d.channel, d.target) for d in deliveries] == [("mqtt", "mf/v1/M1/alerts/critical")]
    assert alert_topic(None, "info") == "mf/v1/_none/alerts/info"


def test_a_signed_body_verifies_and_a_changed_one_does_not():
    body = body_bytes({"event": "alert.opened", "alert": ALERT})
    header = sign("k" * 16, "1700000000", body)
    assert verify_signature("k" * 16, "1700000000", body, header, now=1700000010)
    assert not verify_signature("k" * 16, "1700000000", body + b" ", header, now=1700000010)
    assert not verify_signature("k" * 16, "1700000000", body, header, now=1700009999)  # a replay
