"""Alert lifecycle: open → acknowledged → resolved, with every step archived in `alert_event`.

`AlertBook` drains the engine's transitions into the `alert` table (one open alert per (rule, device,
element), repeats counted), opens removal tasks for failed food-safety tests (BJ 6.1.1.8, 5.3.6), and
carries out what people do: acknowledge, assign, comment, resolve, close a removal task. Each change is
published on the `AlertStream` and handed to the `Router` for webhook / e-mail / MQTT delivery.
Escalation (unacknowledged for longer than a rule's step) is checked here too.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from fleet.errors import Conflict, NotFound
from rules.background import Repeating
from rules.delivery import Outbox
from rules.engine import RuleEngine, Transition
from rules.language import PLATFORM_CATEGORY, Rule, severity_rank
from rules.models import Alert, AlertEvent, AlertStatus, RemovalTask, TaskStatus
from rules.routing import Router, in_markets
from rules.schemas import AlertDetail, AlertEventPublic, AlertFilter, AlertPublic, RemovalTaskPublic
from rules.stream import AlertStream

__all__ = ["ENGINE_ACTOR", "AlertBook", "open_key", "render_message"]

log = logging.getLogger(__name__)
ENGINE_ACTOR = "rules-engine"
WRITE_CHUNK = 100  # transitions per database transaction
# The writer's announcements held back until its transaction commits (per task, so people's actions in the
# API, which run in their own tasks, still announce at once).
_ANNOUNCE: contextvars.ContextVar[list[tuple[str, dict[str, Any], str]] | None] = contextvars.ContextVar(
    "rules_alert_announce", default=None)


def open_key(rule_id: str, device_id: str, element: str) -> str:
    return f"{rule_id}\x1f{device_id}\x1f{element}"


class _Placeholders(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # a field this payload lacks stays visible instead of failing the alert


def render_message(template: str, context: dict[str, Any]) -> str:
    try:
        return template.format_map(_Placeholders(context))[:1000]
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        return template[:1000]


def encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def public(alert: Alert) -> dict[str, Any]:
    return AlertPublic.model_validate(alert).model_dump(mode="json")


class AlertBook:
    def __init__(self, engine: RuleEngine, stream: AlertStream, router: Router, outbox: Outbox, *,
                 flush_interval: float = 0.2, clock: Callable[[], datetime] | None = None) -> None:
        self.engine, self.stream, self.router, self.outbox = engine, stream, router, outbox
        self.flush_interval = flush_interval
        self._now = clock or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()
        self._writer = Repeating(self.apply_pending, flush_interval, "rules-alert-writer")
        engine.on_transition = self._writer.wake
        self.announce = True  # False where an AlertMirror announces changes from the registry instead

    # ------------------------------------------------------------ the writer

    async def apply_pending(self) -> int:
        """Record every transition the engine has queued; returns how many.

        A chunk of transitions is one database transaction (one commit, where one per change made the writer
        the bottleneck under load), each transition inside it a savepoint, so one that fails is undone alone
        and logged. What the changes announce (the alert stream, the outbox worker) goes out after the
        commit, so nobody hears of an alert the database does not have yet.
        """
        async with self._lock:
            transitions = self.engine.drain()
            for start in range(0, len(transitions), WRITE_CHUNK):
                await self._record_chunk(transitions[start:start + WRITE_CHUNK])
            return len(transitions)

    async def _record_chunk(self, chunk: list[Transition]) -> None:
        announced: list[tuple[str, dict[str, Any], str]] = []
        token = _ANNOUNCE.set(announced)
        try:
            async with in_transaction():
                for transition in chunk:
                    before = len(announced)
                    try:
                        async with in_transaction():
                            await self._record(transition)
                    except Exception:  # one bad transition must not stop the others from being recorded
                        del announced[before:]
                        log.exception("recording %s of rule %s failed", transition.action, transition.rule.id)
        except Exception:
            announced.clear()
            log.exception("recording %d alert changes failed", len(chunk))
        finally:
            _ANNOUNCE.reset(token)
        for event, data, comment in announced if self.announce else ():
            self.stream.publish(event, data, comment=comment)
        if announced:
            self.outbox.wake()

    async def _record(self, transition: Transition) -> None:
        if transition.action == "open":
            await self._open(transition)
        elif transition.action == "repeat":
            await self._repeat(transition)
        else:
            await self._clear(transition)

    async def _open(self, tr: Transition) -> None:
        rule = tr.rule.rule
        key = open_key(rule.id, tr.device_id, tr.element)
        at = _at(tr.at)
        context = tr.context or {}
        created = False
        alert = await Alert.get_or_none(open_key=key)
        if alert is None:
            try:
                async with in_transaction():
                    alert = await Alert.create(
                        rule_id=rule.id, rule_name=rule.name, category=rule.category, severity=rule.severity,
                        status=AlertStatus.OPEN, open_key=key, device_id=tr.device_id or None,
                        element=tr.element, market=tr.market, kind=tr.kind or "",
                        message=render_message(rule.template, context), value=encode(tr.value),
                        last_value=encode(tr.value), occurrences=1, context=_small(context), opened_at=at,
                        last_seen_at=at,
                    )
                    await AlertEvent.create(alert=alert, at=at, action="opened", actor=ENGINE_ACTOR,
                                            comment=alert.message, data={"value": tr.value})
                created = True
            except IntegrityError:  # opened meanwhile by another writer: this one is a repeat
                alert = await Alert.get_or_none(open_key=key)
        if not created and alert is not None:
            await Alert.filter(id=alert.id).update(occurrences=F("occurrences") + 1, last_value=encode(tr.value),
                                                   last_seen_at=at)
        if alert is not None and "removal_task" in rule.actions:
            await self._removal_task(alert, tr)
        if created and alert is not None:
            await self._changed(alert, "opened")

    async def _repeat(self, tr: Transition) -> None:
        key = open_key(tr.rule.id, tr.device_id, tr.element)
        at = _at(tr.at)
        if "removal_task" in tr.rule.rule.actions:
            alert = await Alert.get_or_none(open_key=key)
            if alert is None:
                await self._open(tr)  # resolved by hand meanwhile: this occurrence opens a new alert
                return
            await Alert.filter(id=alert.id).update(occurrences=F("occurrences") + tr.count,
                                                   last_value=encode(tr.value), last_seen_at=at)
            await self._removal_task(alert, tr)
            return
        await Alert.filter(open_key=key).update(occurrences=F("occurrences") + tr.count,
                                                last_value=encode(tr.value), last_seen_at=at)

    async def _clear(self, tr: Transition) -> None:
        key = open_key(tr.rule.id, tr.device_id, tr.element)
        alert = await Alert.get_or_none(open_key=key)
        if alert is None:
            return  # resolved by hand already
        at = _at(tr.at)
        alert.status, alert.open_key = AlertStatus.RESOLVED, None
        alert.resolved_at, alert.resolved_by, alert.resolution = at, ENGINE_ACTOR, "auto"
        alert.last_value = encode(tr.value)
        async with in_transaction():
            await alert.save(update_fields=["status", "open_key", "resolved_at", "resolved_by", "resolution",
                                            "last_value"])
            await AlertEvent.create(alert=alert, at=at, action="resolved", actor=ENGINE_ACTOR,
                                    comment="condition cleared", data={"value": tr.value})
        await self._changed(alert, "resolved")

    async def _removal_task(self, alert: Alert, tr: Transition) -> None:
        ctx = (tr.context or {}).get("payload") or {}  # the test result itself (its `value` is the measurement)
        result_id = f"{tr.device_id}:{ctx.get('result_id') or int(tr.at * 1000)}"
        tested_at = ctx.get("tested_at")
        try:
            tested = datetime.fromisoformat(str(tested_at)) if tested_at else None
        except ValueError:
            tested = None
        _, created = await RemovalTask.get_or_create(
            result_id=result_id,
            defaults={
                "alert": alert, "device_id": tr.device_id, "market": tr.market,
                "stall_no": ctx.get("stall_no"), "sample_name": str(ctx.get("sample_name", ""))[:100],
                "item": str(ctx.get("item", ""))[:100], "value": float(ctx.get("value") or 0),
                "unit": str(ctx.get("unit", ""))[:16], "limit": ctx.get("limit"), "tested_at": tested,
            },
        )
        if created:
            what = f"remove {ctx.get('sample_name', '')} from stall {ctx.get('stall_no') or '?'}"
            await AlertEvent.create(alert=alert, at=_at(tr.at), action="removal_task_opened", actor=ENGINE_ACTOR,
                                    comment=what, data={"result_id": result_id})

    async def _changed(self, alert: Alert, event: str, *, roles: list[str] | None = None,
                       comment: str = "") -> None:
        data = public(alert)
        announced = _ANNOUNCE.get()
        if announced is not None:  # inside the writer's transaction: announced once it commits
            announced.append((f"alert.{event}", data, comment))
        elif self.announce:
            self.stream.publish(f"alert.{event}", data, comment=comment)
        try:
            await self.outbox.enqueue(self.router.deliveries(data, event, roles=roles, now=self._now()),
                                      wake=announced is None)
        except Exception:  # the alert is recorded; a failed enqueue is logged, not fatal to the writer
            log.exception("queueing notifications for alert %s failed", alert.id)

    async def start(self) -> None:
        self._writer.start()

    async def aclose(self) -> None:
        await self._writer.stop()
        await self.apply_pending()

    # ------------------------------------------------------------ what people do

    async def _get(self, alert_id: int, markets: frozenset[str] | None) -> Alert:
        alert = await Alert.get_or_none(id=alert_id)
        if alert is None or not in_markets(alert.market, alert.category, markets):
            raise NotFound(f"alert {alert_id} not found")
        return alert

    async def acknowledge(self, alert_id: int, actor: str, comment: str = "", *,
                          markets: frozenset[str] | None = None) -> Alert:
        alert = await self._get(alert_id, markets)
        if alert.status == AlertStatus.ACKNOWLEDGED:
            raise Conflict(f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}")
        if alert.status == AlertStatus.RESOLVED:
            raise Conflict(f"alert {alert_id} is resolved")
        now = self._now()
        alert.status, alert.acknowledged_at, alert.acknowledged_by = AlertStatus.ACKNOWLEDGED, now, actor
        async with in_transaction():
            await alert.save(update_fields=["status", "acknowledged_at", "acknowledged_by"])
            await AlertEvent.create(alert=alert, at=now, action="acknowledged", actor=actor, comment=comment)
        await self._changed(alert, "acknowledged", comment=comment)
        return alert

    async def resolve(self, alert_id: int, actor: str, comment: str = "", *,
                      markets: frozenset[str] | None = None) -> Alert:
        alert = await self._get(alert_id, markets)
        if alert.status == AlertStatus.RESOLVED:
            raise Conflict(f"alert {alert_id} is already resolved ({alert.resolution} by {alert.resolved_by})")
        now = self._now()
        alert.status, alert.open_key = AlertStatus.RESOLVED, None
        alert.resolved_at, alert.resolved_by, alert.resolution = now, actor, "manual"
        async with in_transaction():
            await alert.save(update_fields=["status", "open_key", "resolved_at", "resolved_by", "resolution"])
            await AlertEvent.create(alert=alert, at=now, action="resolved", actor=actor, comment=comment)
        # The engine forgets the key: if the condition still holds, a new alert opens after its for-duration.
        self.engine.release(alert.rule_id, alert.device_id or "", alert.element)
        await self._changed(alert, "resolved", comment=comment)
        return alert

    async def assign(self, alert_id: int, assignee: str, actor: str, comment: str = "", *,
                     markets: frozenset[str] | None = None) -> Alert:
        alert = await self._get(alert_id, markets)
        if alert.status == AlertStatus.RESOLVED:
            raise Conflict(f"alert {alert_id} is resolved; nothing to assign")
        now = self._now()
        previous, alert.assigned_to = alert.assigned_to, assignee
        async with in_transaction():
            await alert.save(update_fields=["assigned_to"])
            await AlertEvent.create(alert=alert, at=now, action="assigned", actor=actor, comment=comment,
                                    data={"assignee": assignee, "previous": previous})
        await self._changed(alert, "assigned", comment=comment)
        return alert

    async def comment(self, alert_id: int, actor: str, comment: str, *,
                      markets: frozenset[str] | None = None) -> Alert:
        alert = await self._get(alert_id, markets)
        await AlertEvent.create(alert=alert, at=self._now(), action="commented", actor=actor, comment=comment)
        await self._changed(alert, "commented", comment=comment)
        return alert

    async def detail(self, alert_id: int, *, markets: frozenset[str] | None = None) -> AlertDetail:
        alert = await self._get(alert_id, markets)
        events = await AlertEvent.filter(alert_id=alert.id).order_by("at", "id")
        return AlertDetail(**AlertPublic.model_validate(alert).model_dump(),
                           events=[AlertEventPublic.model_validate(e) for e in events])

    async def search(self, query: AlertFilter, *, markets: frozenset[str] | None = None) -> list[AlertPublic]:
        rows = Alert.all()
        if query.status == "active":
            rows = rows.filter(status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED])
        elif query.status:
            rows = rows.filter(status=query.status)
        for name in ("severity", "market", "rule_id", "device_id", "category", "assigned_to"):
            value = getattr(query, name)
            if value is not None:
                rows = rows.filter(**{name: value})
        if query.since is not None:
            rows = rows.filter(opened_at__gte=query.since)
        if markets is not None:  # platform alerts concern every market (rules.routing.in_markets)
            rows = rows.filter(Q(market__in=sorted(markets)) | Q(category=PLATFORM_CATEGORY))
        found = await rows.order_by("-opened_at", "-id").offset(query.offset).limit(query.limit)
        return [AlertPublic.model_validate(a) for a in found]

    # ------------------------------------------------------------ removal tasks

    async def removal_tasks(self, status: str | None = None, market: str | None = None, *,
                            markets: frozenset[str] | None = None, limit: int = 100,
                            offset: int = 0) -> list[RemovalTaskPublic]:
        rows = RemovalTask.all()
        if status:
            rows = rows.filter(status=status)
        if market:
            rows = rows.filter(market=market)
        if markets is not None:
            rows = rows.filter(market__in=sorted(markets))
        found = await rows.order_by("-opened_at", "-id").offset(offset).limit(limit)
        return [RemovalTaskPublic.model_validate(t) for t in found]

    async def close_removal_task(self, task_id: int, actor: str, action_taken: str, comment: str = "", *,
                                 markets: frozenset[str] | None = None) -> RemovalTaskPublic:
        """Record what was done with the product; the task is archived, and its alert resolved once every
        removal task of the alert is closed."""
        task = await RemovalTask.get_or_none(id=task_id)
        if task is None or (markets is not None and task.market not in markets):
            raise NotFound(f"removal task {task_id} not found")
        if task.status == TaskStatus.ARCHIVED:
            raise Conflict(f"removal task {task_id} was already closed by {task.closed_by}")
        now = self._now()
        task.status, task.closed_at, task.closed_by, task.action_taken = TaskStatus.ARCHIVED, now, actor, action_taken
        alert = await Alert.get_or_none(id=task.alert_id) if task.alert_id else None  # type: ignore[attr-defined]
        async with in_transaction():
            await task.save(update_fields=["status", "closed_at", "closed_by", "action_taken"])
            if alert is not None:
                await AlertEvent.create(alert=alert, at=now, action="removal_task_closed", actor=actor,
                                        comment=comment or action_taken,
                                        data={"task": task.id, "action_taken": action_taken})
        if alert is not None and alert.status != AlertStatus.RESOLVED:
            still_open = await RemovalTask.filter(alert_id=alert.id, status=TaskStatus.OPEN).exists()
            if not still_open:
                await self.resolve(alert.id, actor, f"removal task {task.id} closed: {action_taken}")
        return RemovalTaskPublic.model_validate(task)

    # ------------------------------------------------------------ escalation

    async def escalate_due(self, rules: dict[str, Rule], now: datetime | None = None) -> int:
        """Apply every escalation step that is due on alerts nobody acknowledged; returns how many."""
        now = now or self._now()
        stepped = [rule_id for rule_id, rule in rules.items() if rule.escalation]
        if not stepped:
            return 0
        count = 0
        for alert in await Alert.filter(status=AlertStatus.OPEN, rule_id__in=stepped):
            steps = rules[alert.rule_id].escalation
            level = alert.escalation_level
            while level < len(steps) and alert.opened_at + steps[level].after <= now:
                step = steps[level]
                level += 1
                before = alert.severity
                if step.severity and severity_rank(step.severity) > severity_rank(alert.severity):
                    alert.severity = step.severity
                alert.escalation_level = level
                async with in_transaction():
                    await alert.save(update_fields=["severity", "escalation_level"])
                    await AlertEvent.create(alert=alert, at=now, action="escalated", actor="escalation",
                                            comment=f"not acknowledged after {step.after}",
                                            data={"level": level, "severity": [before, alert.severity],
                                                  "notify_roles": step.notify_roles})
                await self._changed(alert, "escalated", roles=step.notify_roles or None)
                count += 1
        return count


def _small(context: dict[str, Any]) -> dict[str, Any]:
    """The payload snapshot kept on the alert, without the big lists (a locker's other compartments)."""
    return {k: v for k, v in context.items() if not isinstance(v, list | dict)}
