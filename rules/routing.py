"""Who hears about an alert, and over which channel.

A recipient has a role (what it may receive: `ROLE_CATEGORIES`, and a manager only their markets), markets,
channels and preferences that narrow further (severities, kinds, markets, categories, quiet hours). The
router turns one alert change into outbox rows (rules/delivery.py): one per recipient for webhooks and
e-mail, one per change for MQTT (the topic is per market and severity, not per person). Server-sent events
carry every change; a subscriber that names a recipient sees only what routes to that recipient.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rules.language import CATEGORIES, PLATFORM_CATEGORY, severity_rank
from rules.models import Delivery, DeliveryStatus, Recipient
from rules.schemas import Preferences

__all__ = ["CHANNEL_EVENTS", "ROLE_CATEGORIES", "RecipientView", "Router", "alert_topic", "in_markets"]

# What each role may receive at all; people narrow it with their preferences, never widen it.
ROLE_CATEGORIES: dict[str, set[str]] = {
    "admin": set(CATEGORIES),
    "manager": set(CATEGORIES),
    "maintainer": {"device", "data_quality", PLATFORM_CATEGORY},
}
# Which alert changes each channel carries: e-mail only what needs a person to act.
CHANNEL_EVENTS: dict[str, set[str]] = {
    "webhook": {"opened", "escalated", "acknowledged", "resolved"},
    "email": {"opened", "escalated"},
    "mqtt": {"opened", "escalated", "acknowledged", "resolved"},
    "sse": {"opened", "escalated", "acknowledged", "assigned", "commented", "resolved"},
}


def in_markets(market: str | None, category: str | None, markets: Collection[str] | None) -> bool:
    """Whether an alert falls inside a market scope (None: every market). A platform alert (e.g. the telemetry
    spool is full) has no market because it concerns them all: every scope includes it."""
    return markets is None or category == PLATFORM_CATEGORY or (market is not None and market in markets)


def alert_topic(market: str | None, severity: str) -> str:
    return f"mf/v1/{market or '_none'}/alerts/{severity}"


@dataclass(frozen=True)
class RecipientView:
    """A recipient as the router uses it (built from the row once, when recipients change)."""

    id: int
    name: str
    role: str
    markets: frozenset[str]
    channels: tuple[dict[str, Any], ...]
    preferences: Preferences

    @classmethod
    def of(cls, row: Recipient) -> RecipientView:
        return cls(row.id, row.name, row.role, frozenset(row.markets or ()), tuple(row.channels or ()),
                   Preferences.model_validate(row.preferences or {}))

    def wants(self, alert: dict[str, Any]) -> bool:
        """Whether the role allows this alert and the preferences ask for it."""
        if alert.get("category") not in ROLE_CATEGORIES.get(self.role, set()):
            return False
        market = alert.get("market")
        platform = alert.get("category") == PLATFORM_CATEGORY  # about every market: no market narrows it away
        if self.markets and market not in self.markets and not platform:
            return False
        prefs = self.preferences
        if prefs.severities and alert.get("severity") not in prefs.severities:
            return False
        if prefs.kinds and alert.get("kind") not in prefs.kinds:
            return False
        if prefs.markets and market not in prefs.markets and not platform:
            return False
        return not (prefs.categories and alert.get("category") not in prefs.categories)

    def has(self, channel: str) -> bool:
        return any(c.get("type") == channel for c in self.channels)

    def quiet_until(self, now: datetime, default_timezone: str) -> datetime | None:
        """End of the current quiet-hours window, or None when not inside one."""
        quiet = self.preferences.quiet_hours
        if quiet is None:
            return None
        zone = ZoneInfo(quiet.timezone or default_timezone)
        local = now.astimezone(zone)
        start, end = time.fromisoformat(quiet.start), time.fromisoformat(quiet.end)
        clock = local.time()
        inside = (start <= clock < end) if start < end else (clock >= start or clock < end)
        if not inside or start == end:
            return None
        ends = datetime.combine(local.date(), end, zone)
        if ends <= local:
            ends += timedelta(days=1)
        return ends.astimezone(UTC)


class Router:
    def __init__(self, *, timezone: str = "Asia/Shanghai", mqtt_enabled: bool = False) -> None:
        self.timezone = timezone
        self.mqtt_enabled = mqtt_enabled
        self._recipients: dict[int, RecipientView] = {}

    def set_recipients(self, rows: Iterable[Recipient]) -> None:
        self._recipients = {row.id: RecipientView.of(row) for row in rows if row.active}

    def recipient(self, recipient_id: int) -> RecipientView | None:
        return self._recipients.get(recipient_id)

    def recipients_for(self, alert: dict[str, Any], roles: Iterable[str] | None = None) -> list[RecipientView]:
        wanted_roles = set(roles) if roles else None
        return [r for r in self._recipients.values()
                if r.wants(alert) and (wanted_roles is None or r.role in wanted_roles)]

    def deliveries(self, alert: dict[str, Any], event: str, *, roles: Iterable[str] | None = None,
                   now: datetime | None = None) -> list[Delivery]:
        """The outbox rows for one alert change (not yet saved)."""
        now = now or datetime.now(UTC)
        body = {"event": f"alert.{event}", "alert": alert}
        rows: list[Delivery] = []
        critical = severity_rank(alert.get("severity", "info")) >= severity_rank("critical")
        mqtt_wanted = False
        for recipient in self.recipients_for(alert, roles):
            due = now if critical else (recipient.quiet_until(now, self.timezone) or now)
            for channel in recipient.channels:
                ctype = channel.get("type")
                if ctype == "mqtt":
                    mqtt_wanted = True
                if event not in CHANNEL_EVENTS.get(str(ctype), set()):
                    continue
                if ctype == "webhook":
                    rows.append(Delivery(alert_id=alert.get("id"), recipient_id=recipient.id, event=event,
                                         channel="webhook", target=channel["url"], body=body,
                                         status=DeliveryStatus.PENDING, next_attempt_at=due))
                elif ctype == "email":
                    rows.append(Delivery(alert_id=alert.get("id"), recipient_id=recipient.id, event=event,
                                         channel="email", target=channel["address"], body=_email(alert, event),
                                         status=DeliveryStatus.PENDING, next_attempt_at=due))
        if mqtt_wanted and self.mqtt_enabled and event in CHANNEL_EVENTS["mqtt"]:
            rows.append(Delivery(alert_id=alert.get("id"), recipient_id=None, event=event, channel="mqtt",
                                 target=alert_topic(alert.get("market"), alert.get("severity", "info")), body=body,
                                 status=DeliveryStatus.PENDING, next_attempt_at=now))
        return rows


def _email(alert: dict[str, Any], event: str) -> dict[str, str]:
    headline = "ESCALATED: " if event == "escalated" else ""
    subject = f"[MarketFleet][{alert.get('severity')}] {headline}{alert.get('message')}"
    lines = [
        str(alert.get("message")),
        "",
        f"Severity:  {alert.get('severity')}",
        f"Rule:      {alert.get('rule_name')} ({alert.get('rule_id')})",
        f"Market:    {alert.get('market') or '-'}",
        f"Device:    {alert.get('device_id') or '-'} {alert.get('element') or ''}".rstrip(),
        f"Value:     {alert.get('value')}",
        f"Opened at: {alert.get('opened_at')}",
        f"Alert id:  {alert.get('id')}",
        "",
        "Acknowledge it on the MarketFleet dashboard or with POST /api/v1/alerts/{id}/ack.",
    ]
    return {"subject": subject[:250], "text": "\n".join(lines)}
