"""`setup(...) -> RulesService`: the rules domain as one service the composition root starts and closes.

The platform hands it what it owns (data directory, MQTT publish, optionally a presence sweep and the
telemetry store) and then feeds it: `process(envelope)` for every stored uplink, `on_presence(...)` for every
presence change. Everything else (rule storage, state persistence, alert writing, delivery, escalation,
scheduled checks) runs inside; `aclose()` stops it in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError, field_validator

from fleet.envelope import Envelope
from fleet.errors import Conflict, InvalidRequest, NotFound
from fleet.kinds import Channel
from fleet.models import Market
from rules.alerts import AlertBook
from rules.background import Repeating
from rules.checks import load_devices, metrology_matches, sweep_presence
from rules.delivery import Outbox, Publish, SmtpSettings
from rules.engine import RuleEngine
from rules.language import Metrology, Rule, TelemetrySpool, describe_errors
from rules.mirror import AlertMirror
from rules.models import Alert, AlertStatus, Delivery, DeliveryStatus, JobRun, Recipient, RuleRecord
from rules.packs import BUILTIN_PACK, RuleError, dump_pack, load_pack, parse_pack, parse_rule
from rules.replay import dry_run, envelopes_from_store, replay_devices
from rules.reports import DataQualityReport, build_data_quality_report, write_report
from rules.routing import Router
from rules.scheduler import DEFAULT_SCHEDULES, JobSchedule, RulesScheduler
from rules.schemas import KEEP_SECRET, DryRunResult, MyNotifications, RecipientCreate, RecipientPublic
from rules.state import StateStore
from rules.stream import AlertStream
from telemetry import SpoolStatus, TelemetryStore, spool_status

__all__ = ["RulePublic", "RulesService", "RulesSettings", "setup"]

log = logging.getLogger(__name__)
PresenceSweep = Callable[[RuleEngine], Awaitable[int]]
FEED_YIELD_EVERY = 500


class RulesSettings(BaseModel):
    """What the composition root may configure; fits as a `rules` section of the platform settings."""

    load_builtin: bool = True  # add the built-in pack's rules that are missing at every start
    packs: list[Path] = []  # further pack files imported at every start (the file wins over API edits)
    scheduler: bool = True
    # Merged over DEFAULT_SCHEDULES: naming one job changes that job only; `{enabled: false}` turns one off.
    schedules: dict[str, JobSchedule] = Field(default_factory=lambda: dict(DEFAULT_SCHEDULES))
    misfire_grace_s: int = 3600
    smtp: SmtpSettings | None = None
    webhook_timeout_s: float = 10.0
    retry_base_s: float = 5.0
    retry_max_s: float = 900.0
    retry_max_attempts: int = 50
    state_flush_s: float = 0.5
    aux_flush_s: float = 30.0
    alert_flush_s: float = 0.2
    escalation_check_s: float = 15.0
    device_refresh_s: float = 300.0
    spool_check_s: float = 5.0  # how often the telemetry_spool rules look at this process's InfluxDB spool
    report_dir: Path | None = None  # {data_dir}/reports/data-quality when empty


    @field_validator("schedules")
    @classmethod
    def _over_defaults(cls, value: dict[str, JobSchedule]) -> dict[str, JobSchedule]:
        unknown = sorted(set(value) - set(DEFAULT_SCHEDULES))
        if unknown:
            raise ValueError(f"unknown scheduled check {', '.join(map(repr, unknown))}; known: "
                             f"{', '.join(DEFAULT_SCHEDULES)}")
        return {**DEFAULT_SCHEDULES, **value}


class RulePublic(BaseModel):
    id: str
    source: str
    version: int
    enabled: bool
    created_at: datetime
    updated_at: datetime
    definition: dict[str, Any]
    firing: int = 0
    pending: int = 0
    error: str | None = None  # a stored rule that no longer validates (the catalog changed)


def setup(
    settings: RulesSettings | None = None,
    *,
    data_dir: Path,
    timezone: str = "Asia/Shanghai",
    publish: Publish | None = None,
    presence_sweep: PresenceSweep | None = None,
    telemetry: TelemetryStore | None = None,
) -> RulesService:
    """Build (not start) the rules service. The registry database must be open (tortoise initialised)."""
    return RulesService(settings or RulesSettings(), data_dir=data_dir, timezone=timezone, publish=publish,
                        presence_sweep=presence_sweep, telemetry=telemetry)


class RulesService:
    def __init__(self, settings: RulesSettings, *, data_dir: Path, timezone: str, publish: Publish | None,
                 presence_sweep: PresenceSweep | None, telemetry: TelemetryStore | None) -> None:
        self.settings, self.data_dir, self.timezone = settings, data_dir, timezone
        self.telemetry = telemetry
        self._presence_sweep = presence_sweep
        self.engine = RuleEngine()
        self.stream = AlertStream()
        self.router = Router(timezone=timezone, mqtt_enabled=publish is not None)
        self.outbox = Outbox(self.router, publish=publish, smtp=settings.smtp, backoff_base=settings.retry_base_s,
                             backoff_max=settings.retry_max_s, max_attempts=settings.retry_max_attempts,
                             timeout_s=settings.webhook_timeout_s)
        self.alerts = AlertBook(self.engine, self.stream, self.router, self.outbox,
                                flush_interval=settings.alert_flush_s)
        self.state = StateStore(self.engine, flush_interval=settings.state_flush_s,
                                aux_interval=settings.aux_flush_s)
        self.scheduler: RulesScheduler | None = None
        if settings.scheduler:
            self.scheduler = RulesScheduler(settings.schedules, self.run_check, timezone=timezone,
                                            misfire_grace_s=settings.misfire_grace_s)
        self.report_dir = settings.report_dir or data_dir / "reports" / "data-quality"
        self.rule_errors: dict[str, str] = {}
        self._loops = [
            Repeating(self._escalate, settings.escalation_check_s, "rules-escalation"),
            Repeating(self.refresh_devices, settings.device_refresh_s, "rules-devices"),
        ]
        if spool_status(telemetry) is not None:
            self._loops.append(Repeating(self.check_telemetry_spool, settings.spool_check_s, "rules-spool-check"))
        self._spool_refused = 0
        self._feeds: list[tuple[AsyncIterable[Any], asyncio.Task[None]]] = []
        self.mirror: AlertMirror | None = None
        self._started = False

    # ------------------------------------------------------------ what the platform calls

    def process(self, envelope: Envelope) -> None:
        """Evaluate one stored uplink (synchronous, no I/O; alerts are written by a background task)."""
        self.engine.process(envelope)

    def on_presence(self, device_id: str, kind: str | None, market: str | None, online: bool, at: datetime) -> None:
        self.engine.on_presence(device_id, kind, market, online, at)

    async def consume(self, events: AsyncIterable[Any]) -> None:
        """Feed the engine from an event stream (the platform bus subscription): envelopes are evaluated,
        presence changes (anything with device_id, online, at, and optionally kind and market) go to
        `on_presence`. Runs until the stream ends. One bad event is logged and skipped, never fatal."""
        handled = 0
        async for event in events:
            try:
                if isinstance(event, Envelope):
                    self.engine.process(event)
                elif hasattr(event, "online") and hasattr(event, "device_id"):
                    self.engine.on_presence(event.device_id, getattr(event, "kind", None),
                                            getattr(event, "market", None), bool(event.online), event.at)
            except Exception:
                log.exception("rules: could not evaluate %r", event)
            handled += 1
            if handled % FEED_YIELD_EVERY == 0:
                # A full buffer is read without suspending: let ingest and the API run between chunks.
                await asyncio.sleep(0)

    def mirror_alerts(self, interval: float = 0.5) -> None:
        """Announce alert changes read back from the registry, written by any process, instead of directly:
        for a process that serves the API while the engine runs where ingest does (rules/mirror.py).
        Call before `start()`."""
        self.mirror = AlertMirror(self.stream, interval=interval)
        self.alerts.announce = False

    def follow(self, events: AsyncIterable[Any]) -> None:
        """Consume `events` in a task the service owns; `aclose()` closes the stream (if it has `close()`)
        and ends the task. The platform calls this with its bus subscription."""
        task = asyncio.create_task(self.consume(events), name="rules-feed")
        self._feeds.append((events, task))

    async def _stop_feeds(self) -> None:
        feeds, self._feeds = self._feeds, []
        for events, task in feeds:
            close = getattr(events, "close", None)
            if callable(close):
                close()
            task.cancel()
        for _, task in feeds:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.router.set_recipients(await Recipient.all())
        if self.settings.load_builtin:
            await self._import(load_pack(BUILTIN_PACK), source="builtin", mode="missing")
        for path in self.settings.packs:
            await self._import(load_pack(path), source=f"pack:{path.name}", mode="merge")
        self.engine.set_rules(await self._stored_rules())
        await self.refresh_devices()
        firing = await self.state.load()
        live = {(r, d or "", e) for r, d, e in await Alert.filter(open_key__isnull=False).values_list(
            "rule_id", "device_id", "element")}
        for key in firing:
            if key not in live:
                self.engine.release(*key)  # resolved by hand while the platform was down
        await self.engine.start()
        await self.state.start()
        await self.alerts.start()
        await self.outbox.start()
        for loop in self._loops:
            loop.start()
        if self.mirror is not None:
            await self.mirror.start()
        if self.scheduler is not None:
            await self.scheduler.start()

    async def aclose(self) -> None:
        await self._stop_feeds()  # also for a service that was never started
        if not self._started:
            return
        self._started = False
        steps: list[Callable[[], Awaitable[Any]]] = []
        if self.mirror is not None:
            steps.append(self.mirror.aclose)
        if self.scheduler is not None:
            steps.append(self.scheduler.aclose)
        steps += [loop.stop for loop in self._loops]
        steps += [self.engine.aclose, self.alerts.aclose, self.state.aclose, self.outbox.aclose, self.stream.aclose]
        for step in steps:
            # Each part stops even if one before it failed (e.g. the registry went away): a failure that
            # loses unsaved engine state is logged, and the rest still closes.
            try:
                await step()
            except Exception:
                log.exception("rules: stopping %s failed", getattr(step, "__qualname__", step))

    async def __aenter__(self) -> RulesService:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _escalate(self) -> int:
        return await self.alerts.escalate_due({rule_id: c.rule for rule_id, c in self.engine.rules.items()})

    async def refresh_devices(self) -> None:
        devices, kinds = await load_devices()
        self.engine.set_devices(devices, kinds)

    async def flush(self) -> None:
        """Write queued alerts and engine state now (tests, and before a planned stop)."""
        await self.alerts.apply_pending()
        await self.state.flush(include_aux=True)

    # ------------------------------------------------------------ rules as data

    async def _stored_rules(self) -> list[Rule]:
        rules = []
        self.rule_errors.clear()
        for record in await RuleRecord.all().order_by("id"):
            try:
                rule = Rule.model_validate(record.definition)
            except ValidationError as err:
                # The catalog may have changed under a stored rule: skip it, say why, keep the platform up.
                self.rule_errors[record.id] = "; ".join(describe_errors(err))
                log.error("rule %s no longer validates: %s", record.id, self.rule_errors[record.id])
                continue
            rules.append(rule.model_copy(update={"enabled": record.enabled}))
        return rules

    def _public(self, record: RuleRecord) -> RulePublic:
        compiled = self.engine.rules.get(record.id)
        states = compiled.states.values() if compiled else ()
        phases = [st.phase for st in states]
        try:
            definition = Rule.model_validate(record.definition).model_copy(update={"enabled": record.enabled}).dump()
        except ValidationError:
            definition = record.definition
        return RulePublic(id=record.id, source=record.source, version=record.version, enabled=record.enabled,
                          created_at=record.created_at, updated_at=record.updated_at, definition=definition,
                          firing=sum(1 for p in phases if p in (2, 3)), pending=sum(1 for p in phases if p == 1),
                          error=self.rule_errors.get(record.id))

    async def list_rules(self) -> list[RulePublic]:
        return [self._public(r) for r in await RuleRecord.all().order_by("id")]

    async def get_rule(self, rule_id: str) -> RulePublic:
        record = await RuleRecord.get_or_none(id=rule_id)
        if record is None:
            raise NotFound(f"rule {rule_id!r} not found")
        return self._public(record)

    def validate_rule(self, data: Any) -> Rule:
        return parse_rule(data)

    async def create_rule(self, data: Any, source: str = "api") -> RulePublic:
        rule = parse_rule(data)
        if await RuleRecord.exists(id=rule.id):
            raise Conflict(f"rule {rule.id!r} exists; PUT /api/v1/rules/{rule.id} changes it")
        record = await RuleRecord.create(id=rule.id, definition=_stored(rule), enabled=rule.enabled, source=source)
        self.engine.upsert_rule(rule)
        return self._public(record)

    async def update_rule(self, rule_id: str, data: Any) -> RulePublic:
        if isinstance(data, dict):
            data = {"id": rule_id, **data}
        rule = parse_rule(data)
        if rule.id != rule_id:
            raise InvalidRequest(f"id: the body names {rule.id!r}, the path {rule_id!r}; a rule's id cannot change")
        record = await RuleRecord.get_or_none(id=rule_id)
        if record is None:
            raise NotFound(f"rule {rule_id!r} not found")
        record.definition, record.enabled, record.version = _stored(rule), rule.enabled, record.version + 1
        await record.save()
        self.rule_errors.pop(rule_id, None)
        self.engine.upsert_rule(rule)
        return self._public(record)

    async def delete_rule(self, rule_id: str) -> None:
        """Delete a rule; a built-in one is disabled instead, so the next start does not bring it back."""
        record = await RuleRecord.get_or_none(id=rule_id)
        if record is None:
            raise NotFound(f"rule {rule_id!r} not found")
        if record.source == "builtin":
            record.enabled = False
            await record.save(update_fields=["enabled", "updated_at"])
        else:
            await record.delete()
        self.engine.remove_rule(rule_id)

    async def _import(self, rules: list[Rule], *, source: str, mode: Literal["merge", "missing"]) -> dict[str, int]:
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        existing = {r.id: r for r in await RuleRecord.filter(id__in=[rule.id for rule in rules])}
        for rule in rules:
            record = existing.get(rule.id)
            if record is None:
                await RuleRecord.create(id=rule.id, definition=_stored(rule), enabled=rule.enabled, source=source)
                counts["created"] += 1
            elif mode == "merge" and (record.definition != _stored(rule) or record.enabled != rule.enabled):
                record.definition, record.enabled, record.version = _stored(rule), rule.enabled, record.version + 1
                record.source = source
                await record.save()
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        return counts

    async def import_pack(self, text: str, *, mode: Literal["merge", "missing"] = "merge",
                          source: str | None = None) -> dict[str, int]:
        """Add a YAML pack's rules (`merge`: also replace rules of the same id; `missing`: only new ones)."""
        rules, header = parse_pack(text)
        counts = await self._import(rules, source=source or f"pack:{header.get('name', 'import')}", mode=mode)
        self.engine.set_rules(await self._stored_rules())
        return counts

    async def export_pack(self, *, source: str | None = None, ids: list[str] | None = None,
                          name: str = "export") -> str:
        query = RuleRecord.all().order_by("id")
        if source:
            query = query.filter(source=source)
        if ids:
            query = query.filter(id__in=ids)
        rules = []
        for record in await query:
            with contextlib.suppress(ValidationError):
                rules.append(Rule.model_validate(record.definition).model_copy(update={"enabled": record.enabled}))
        return dump_pack(rules, name=name, description=f"exported {datetime.now(UTC).isoformat(timespec='seconds')}")

    async def dry_run(self, data: Any, *, days: float = 7.0, envelopes: list[dict[str, Any]] | None = None,
                      sample: int = 50) -> DryRunResult:
        """How the rule would have fired: over `envelopes` given inline, else the telemetry of the last `days`."""
        rule = parse_rule(data)
        end = datetime.now(UTC)
        start = end - timedelta(days=days)
        if envelopes is not None:
            try:
                parsed = sorted((Envelope.model_validate(e) for e in envelopes), key=lambda e: e.ts)
            except ValidationError as err:
                raise RuleError(describe_errors(err, "envelopes")) from None
            devices = await replay_devices(rule) if rule.scope.labels else None
            return await dry_run(rule, _iterate(parsed), sample=sample, devices=devices)
        if self.telemetry is None:
            raise InvalidRequest("no telemetry store is configured; send the readings as 'envelopes'")
        if rule.scope.kind is None:
            raise InvalidRequest("scope.kind: a dry-run over stored telemetry needs the rule's kind")
        devices = await replay_devices(rule)
        source = envelopes_from_store(self.telemetry, sorted(devices), rule.scope.kind, Channel(rule.scope.channel),
                                      start, end, markets={d: m for d, (m, _) in devices.items()})
        return await dry_run(rule, source, sample=sample, devices=devices, start=start, end=end)

    # ------------------------------------------------------------ recipients

    @staticmethod
    def recipient_public(row: Recipient) -> RecipientPublic:
        channels = [{**c, "secret": KEEP_SECRET} if c.get("type") == "webhook" else dict(c) for c in row.channels]
        return RecipientPublic(id=row.id, name=row.name, role=row.role, user_id=row.user_id, markets=row.markets,
                               channels=channels, preferences=row.preferences, active=row.active,
                               created_at=row.created_at)

    async def _reload_recipients(self) -> None:
        self.router.set_recipients(await Recipient.all())

    async def list_recipients(self) -> list[RecipientPublic]:
        return [self.recipient_public(r) for r in await Recipient.all().order_by("id")]

    async def get_recipient(self, recipient_id: int) -> RecipientPublic:
        row = await Recipient.get_or_none(id=recipient_id)
        if row is None:
            raise NotFound(f"recipient {recipient_id} not found")
        return self.recipient_public(row)

    async def create_recipient(self, data: RecipientCreate) -> RecipientPublic:
        dumped = data.model_dump(mode="json")
        for n, channel in enumerate(dumped["channels"]):
            if channel["type"] == "webhook" and channel["secret"] == KEEP_SECRET:
                raise InvalidRequest(f"channels[{n}].secret: a new webhook needs its secret")
        row = await Recipient.create(**dumped)
        await self._reload_recipients()
        return self.recipient_public(row)

    async def update_recipient(self, recipient_id: int, data: RecipientCreate) -> RecipientPublic:
        row = await Recipient.get_or_none(id=recipient_id)
        if row is None:
            raise NotFound(f"recipient {recipient_id} not found")
        dumped = data.model_dump(mode="json")
        # A webhook secret sent back as "***" (as the API shows it) keeps the stored one.
        stored = {c.get("url"): c.get("secret") for c in row.channels if c.get("type") == "webhook"}
        for n, channel in enumerate(dumped["channels"]):
            if channel["type"] == "webhook" and channel["secret"] == KEEP_SECRET:
                if channel["url"] not in stored:
                    raise InvalidRequest(f"channels[{n}].secret: a new webhook URL needs its secret")
                channel["secret"] = stored[channel["url"]]
        row.update_from_dict(dumped)
        await row.save()
        await self._reload_recipients()
        return self.recipient_public(row)

    async def my_notifications(self, user_id: str) -> RecipientPublic:
        """A person's own notification settings (the recipient linked to their account)."""
        row = await Recipient.get_or_none(user_id=user_id)
        if row is None:
            raise NotFound("no notification settings yet; PUT them to start receiving alerts")
        return self.recipient_public(row)

    async def set_my_notifications(self, *, user_id: str, name: str, role: str, markets: frozenset[str] | None,
                                   data: MyNotifications) -> RecipientPublic:
        """Create or replace a person's own settings; role and markets are the account's, not the body's."""
        try:
            body = RecipientCreate(name=name, role=role, user_id=user_id, markets=sorted(markets or ()),
                                   channels=data.channels, preferences=data.preferences, active=data.active)
        except ValidationError as err:
            raise InvalidRequest("; ".join(describe_errors(err))) from None
        row = await Recipient.get_or_none(user_id=user_id)
        if row is None:
            return await self.create_recipient(body)
        return await self.update_recipient(row.id, body)

    async def delete_recipient(self, recipient_id: int) -> None:
        deleted = await Recipient.filter(id=recipient_id).delete()
        if not deleted:
            raise NotFound(f"recipient {recipient_id} not found")
        await self._reload_recipients()

    # ------------------------------------------------------------ scheduled checks

    def _today(self, at: datetime) -> date:
        return at.astimezone(ZoneInfo(self.timezone)).date()

    async def run_check(self, name: str, scheduled_for: datetime) -> str:
        """One scheduled check by name (the scheduler's dispatch); returns a line for the run record."""
        if name == "offline-sweep":
            if self._presence_sweep is not None:
                return f"{await self._presence_sweep(self.engine)} devices offline (platform sweep)"
            return f"{await sweep_presence(self.engine)} devices offline"
        if name == "metrology":
            return await self.check_metrology(self._today(scheduled_for))
        if name == "data-quality-report":
            reports = await self.write_data_quality_reports(self._today(scheduled_for) - timedelta(days=1))
            return f"{len(reports)} market reports written to {self.report_dir}"
        if name == "housekeeping":
            return await self.housekeeping()
        raise KeyError(f"unknown scheduled check {name!r}")

    async def check_metrology(self, today: date) -> str:
        lines = []
        now = datetime.now(UTC).timestamp()
        for rule_id, compiled in list(self.engine.rules.items()):
            if isinstance(compiled.rule.condition, Metrology):
                matches = await metrology_matches(compiled.rule, today)
                self.engine.apply_snapshot(rule_id, matches, now)
                lines.append(f"{rule_id}: {len(matches)} owners")
        await self.alerts.apply_pending()
        return "; ".join(lines) or "no metrology rules"

    async def check_telemetry_spool(self, status: SpoolStatus | None = None) -> int:
        """Feed the telemetry_spool rules this process's spool level; returns how many of them hold.

        The element is this host and spool directory, so each ingest process of a scale-out deployment has its
        own alert per state; a refused write between two checks counts as full even if a smaller one fit later.
        """
        status = status or spool_status(self.telemetry)
        if status is None:
            return 0
        refused_since = status.refused > self._spool_refused
        self._spool_refused = status.refused
        host = socket.gethostname()
        element = f"{host}:{status.directory}"
        context = {"host": host, "directory": status.directory, "fill_percent": status.fill_percent,
                   "spool_bytes": status.bytes, "max_bytes": status.max_bytes, "batches": status.batches,
                   "refused": status.refused,
                   # Why it refuses: a full disk under the spool long before the spool's own limit reads differently.
                   "reason": "no space left on the disk under it" if status.disk_full
                   else f"{status.fill_percent} % of its {status.max_bytes} bytes"}
        at = datetime.now(UTC).timestamp()
        holding = 0
        for rule_id, compiled in list(self.engine.rules.items()):
            cond = compiled.rule.condition
            if not isinstance(cond, TelemetrySpool):
                continue
            firing = self.engine.state_of(rule_id, "", element) in ("firing", "clearing")
            if cond.state == "full":
                opens = status.refusing or refused_since
            else:
                opens = status.fill_percent >= cond.fire_percent
            holds = opens or (firing and status.fill_percent >= cond.clear_below)
            holding += holds
            self.engine.apply_check(rule_id, element, holds, status.fill_percent, context, at)
        return holding

    async def data_quality_report(self, market: str, day: date, *, take_gaps: bool = False) -> DataQualityReport:
        if not await Market.exists(code=market):
            raise NotFound(f"market {market!r} not found")
        gaps = self.engine.take_sequence_gaps() if take_gaps else dict(self.engine.sequence_gaps)
        return await build_data_quality_report(market, day, timezone=self.timezone, sequence_gaps=gaps)

    async def write_data_quality_reports(self, day: date) -> list[Path]:
        gaps = self.engine.take_sequence_gaps()  # counted since the previous report
        written: list[Path] = []
        for market in await Market.all().values_list("code", flat=True):
            report = await build_data_quality_report(str(market), day, timezone=self.timezone, sequence_gaps=gaps)
            written += write_report(report, self.report_dir)
        return written

    async def housekeeping(self, *, keep_runs_days: int = 90, keep_deliveries_days: int = 30) -> str:
        now = datetime.now(UTC)
        runs = await JobRun.filter(scheduled_for__lt=now - timedelta(days=keep_runs_days)).delete()
        deliveries = await Delivery.filter(status=DeliveryStatus.DELIVERED,
                                           created_at__lt=now - timedelta(days=keep_deliveries_days)).delete()
        return f"removed {runs} run records and {deliveries} delivered notifications"

    async def status(self) -> dict[str, Any]:
        return {
            "rules": len(self.engine.rules),
            "rule_errors": self.rule_errors,
            "open_alerts": await Alert.filter(status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]).count(),
            "pending_deliveries": await Delivery.filter(status=DeliveryStatus.PENDING).count(),
            "stream_subscribers": self.stream.subscribers,
            "jobs": self.scheduler.jobs() if self.scheduler else [],
        }


def _stored(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(mode="json", by_alias=True)


async def _iterate(items: list[Envelope]) -> AsyncIterator[Envelope]:
    for item in items:
        yield item
