"""Rules, alerts, removal tasks, recipients, rule packs, data-quality reports, and the alert stream (SSE).

Thin: parse, authorise, call the `RulesService` (`ctx.services["rules"]`), shape the answer. Reading alerts
needs alerts:read (managers see their markets only), handling them alerts:write, changing rules, recipients
and packs rules:write.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from accounts.permissions import Permission, Principal
from api.audit import audit_before
from api.auth import ContextDep, require
from api.downloads import attachment
from api.sse import alert_event_stream
from fleet.errors import InvalidRequest, NotFound
from rules.language import Severity
from rules.packs import RuleError
from rules.reports import report_csv, report_html
from rules.routing import in_markets
from rules.schemas import (
    AlertDetail,
    AlertFilter,
    AlertPublic,
    AssignBody,
    CloseTaskBody,
    CommentBody,
    DryRunResult,
    MyNotifications,
    RecipientCreate,
    RecipientPublic,
    RemovalTaskPublic,
)
from rules.service import RulePublic, RulesService

router = APIRouter(tags=["rules"])



async def get_rules(ctx: ContextDep) -> RulesService:
    service = ctx.services.get("rules")
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the rules service is not running")
    return service  # type: ignore[no-any-return]


RulesDep = Annotated[RulesService, Depends(get_rules)]
AlertsRead = Annotated[Principal, require(Permission.ALERTS_READ)]
AlertsWrite = Annotated[Principal, require(Permission.ALERTS_WRITE)]
RulesWrite = Annotated[Principal, require(Permission.RULES_WRITE)]
ReportsRead = Annotated[Principal, require(Permission.REPORTS_READ)]
RuleBody = Annotated[dict[str, Any], Body(description="a rule as in docs/rules.md")]


class ValidateResult(BaseModel):
    valid: bool
    problems: list[str] = []
    rule: dict[str, Any] | None = None  # the rule as stored (defaults left out) when valid


class DryRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: dict[str, Any]
    days: float = Field(default=7.0, gt=0, le=31)
    envelopes: list[dict[str, Any]] | None = None  # replay these instead of the stored telemetry
    sample: int = Field(default=50, ge=0, le=1000)


# ---------------------------------------------------------------- rules


@router.get("/api/v1/rules", response_model=list[RulePublic])
async def list_rules(service: RulesDep, _: AlertsRead) -> list[RulePublic]:
    return await service.list_rules()


@router.post("/api/v1/rules", status_code=status.HTTP_201_CREATED, response_model=RulePublic)
async def create_rule(data: RuleBody, service: RulesDep, _: RulesWrite) -> RulePublic:
    return await service.create_rule(data)


@router.post("/api/v1/rules/validate", response_model=ValidateResult)
async def validate_rule(data: RuleBody, service: RulesDep, _: RulesWrite) -> ValidateResult:
    try:
        rule = service.validate_rule(data)
    except RuleError as err:
        return ValidateResult(valid=False, problems=err.problems)
    return ValidateResult(valid=True, rule=rule.dump())


@router.post("/api/v1/rules/dry-run", response_model=DryRunResult)
async def dry_run(body: DryRunBody, service: RulesDep, _: RulesWrite) -> DryRunResult:
    return await service.dry_run(body.rule, days=body.days, envelopes=body.envelopes, sample=body.sample)


@router.get("/api/v1/rules/{rule_id}", response_model=RulePublic)
async def get_rule(rule_id: str, service: RulesDep, _: AlertsRead) -> RulePublic:
    return await service.get_rule(rule_id)


@router.put("/api/v1/rules/{rule_id}", response_model=RulePublic)
async def update_rule(rule_id: str, data: RuleBody, request: Request, service: RulesDep,
                      _: RulesWrite) -> RulePublic:
    audit_before(request, await service.get_rule(rule_id))
    return await service.update_rule(rule_id, data)


@router.delete("/api/v1/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(rule_id: str, service: RulesDep, _: RulesWrite) -> Response:
    await service.delete_rule(rule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/v1/rule-packs/export", response_class=PlainTextResponse)
async def export_pack(
    service: RulesDep,
    _: RulesWrite,
    source: str | None = None,
    ids: Annotated[list[str] | None, Query()] = None,
    name: str = "export",
) -> PlainTextResponse:
    text = await service.export_pack(source=source, ids=ids, name=name)
    return PlainTextResponse(text, media_type="application/yaml",
                             headers=attachment(f"{name}.yaml"))


@router.post("/api/v1/rule-packs/import")
async def import_pack(
    request: Request, service: RulesDep, _: RulesWrite, mode: Literal["merge", "missing"] = "merge"
) -> dict[str, int]:
    """Body: the pack as YAML text (Content-Type application/yaml or text/plain)."""
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as err:
        raise RuleError(["body: a rule pack is UTF-8 YAML text"]) from err
    return await service.import_pack(text, mode=mode)


# ---------------------------------------------------------------- alerts


def _markets(who: Principal) -> frozenset[str] | None:
    return who.markets


@router.get("/api/v1/alerts", response_model=list[AlertPublic])
async def list_alerts(query: Annotated[AlertFilter, Query()], service: RulesDep, who: AlertsRead) -> list[AlertPublic]:
    return await service.alerts.search(query, markets=_markets(who))


@router.get("/api/v1/alerts/stream")
async def alert_stream(
    service: RulesDep,
    who: AlertsRead,
    recipient: int | None = None,
    market: str | None = None,
    severity: Severity | None = None,
) -> StreamingResponse:
    """Server-sent events, one per alert change (`event: alert.opened` …, data: the message as JSON)."""
    view = service.router.recipient(recipient) if recipient is not None else None
    if recipient is not None and view is None:
        raise NotFound(f"recipient {recipient} not found (or inactive)")

    def accept(message: dict[str, Any]) -> bool:
        alert = message["alert"]
        if not in_markets(alert.get("market"), alert.get("category"), who.markets):
            return False
        if market is not None and alert.get("market") != market:
            return False
        if severity is not None and alert.get("severity") != severity:
            return False
        return view is None or view.wants(alert)

    # Subscribed before the answer starts: nothing published meanwhile is missed.
    return alert_event_stream(service.stream.subscribe(accept))


@router.get("/api/v1/alerts/{alert_id}", response_model=AlertDetail)
async def get_alert(alert_id: int, service: RulesDep, who: AlertsRead) -> AlertDetail:
    return await service.alerts.detail(alert_id, markets=_markets(who))


@router.post("/api/v1/alerts/{alert_id}/ack", response_model=AlertPublic)
async def acknowledge_alert(alert_id: int, body: CommentBody, service: RulesDep, who: AlertsWrite) -> AlertPublic:
    alert = await service.alerts.acknowledge(alert_id, who.actor, body.comment, markets=_markets(who))
    return AlertPublic.model_validate(alert)


@router.post("/api/v1/alerts/{alert_id}/resolve", response_model=AlertPublic)
async def resolve_alert(alert_id: int, body: CommentBody, service: RulesDep, who: AlertsWrite) -> AlertPublic:
    alert = await service.alerts.resolve(alert_id, who.actor, body.comment, markets=_markets(who))
    return AlertPublic.model_validate(alert)


@router.post("/api/v1/alerts/{alert_id}/assign", response_model=AlertPublic)
async def assign_alert(alert_id: int, body: AssignBody, service: RulesDep, who: AlertsWrite) -> AlertPublic:
    alert = await service.alerts.assign(alert_id, body.assignee, who.actor, body.comment, markets=_markets(who))
    return AlertPublic.model_validate(alert)


@router.post("/api/v1/alerts/{alert_id}/comment", response_model=AlertPublic)
async def comment_alert(alert_id: int, body: CommentBody, service: RulesDep, who: AlertsWrite) -> AlertPublic:
    alert = await service.alerts.comment(alert_id, who.actor, body.comment, markets=_markets(who))
    return AlertPublic.model_validate(alert)


# ---------------------------------------------------------------- removal tasks


@router.get("/api/v1/removal-tasks", response_model=list[RemovalTaskPublic])
async def list_removal_tasks(
    service: RulesDep,
    who: AlertsRead,
    status_: Annotated[Literal["open", "archived"] | None, Query(alias="status")] = None,
    market: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[RemovalTaskPublic]:
    return await service.alerts.removal_tasks(status_, market, markets=_markets(who), limit=limit, offset=offset)


@router.post("/api/v1/removal-tasks/{task_id}/close", response_model=RemovalTaskPublic)
async def close_removal_task(task_id: int, body: CloseTaskBody, service: RulesDep,
                             who: AlertsWrite) -> RemovalTaskPublic:
    return await service.alerts.close_removal_task(task_id, who.actor, body.action_taken, body.comment,
                                                   markets=_markets(who))


# ---------------------------------------------------------------- recipients


@router.get("/api/v1/recipients", response_model=list[RecipientPublic])
async def list_recipients(service: RulesDep, _: RulesWrite) -> list[RecipientPublic]:
    return await service.list_recipients()


@router.post("/api/v1/recipients", status_code=status.HTTP_201_CREATED, response_model=RecipientPublic)
async def create_recipient(data: RecipientCreate, service: RulesDep, _: RulesWrite) -> RecipientPublic:
    return await service.create_recipient(data)


@router.get("/api/v1/recipients/{recipient_id}", response_model=RecipientPublic)
async def get_recipient(recipient_id: int, service: RulesDep, _: RulesWrite) -> RecipientPublic:
    return await service.get_recipient(recipient_id)


@router.put("/api/v1/recipients/{recipient_id}", response_model=RecipientPublic)
async def update_recipient(recipient_id: int, data: RecipientCreate, request: Request, service: RulesDep,
                           _: RulesWrite) -> RecipientPublic:
    audit_before(request, await service.get_recipient(recipient_id))
    return await service.update_recipient(recipient_id, data)


@router.delete("/api/v1/recipients/{recipient_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_recipient(recipient_id: int, service: RulesDep, _: RulesWrite) -> Response:
    await service.delete_recipient(recipient_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------- a person's own notification settings


def _person(who: Principal) -> str:
    if who.user_id is None:
        raise InvalidRequest("only a person's account has notification settings; sign in as that person")
    return str(who.user_id)


@router.get("/api/v1/me/notifications", response_model=RecipientPublic)
async def my_notifications(service: RulesDep, who: AlertsRead) -> RecipientPublic:
    """Where and what alerts reach the signed-in person."""
    return await service.my_notifications(_person(who))


@router.put("/api/v1/me/notifications", response_model=RecipientPublic)
async def set_my_notifications(data: MyNotifications, service: RulesDep, who: AlertsRead) -> RecipientPublic:
    """Set the signed-in person's channels and preferences (severities, kinds, markets, categories, quiet
    hours), within what their role and markets allow. Anyone who may read alerts may choose how to hear them."""
    return await service.set_my_notifications(user_id=_person(who), name=who.actor.removeprefix("user:"),
                                              role=str(who.role), markets=who.markets, data=data)


# ---------------------------------------------------------------- reports and scheduled checks


@router.get("/api/v1/reports/data-quality", response_model=None)
async def data_quality_report(
    market: str,
    day: date,
    service: RulesDep,
    who: ReportsRead,
    format: Literal["html", "csv", "json"] = "html",
) -> Response | dict[str, Any]:
    if not who.sees_market(market):
        raise NotFound(f"market {market!r} not found")
    report = await service.data_quality_report(market, day)
    if format == "html":
        return Response(report_html(report), media_type="text/html; charset=utf-8")
    if format == "csv":
        return Response(report_csv(report), media_type="text/csv; charset=utf-8",
                        headers=attachment(f"{market}-{day}.csv"))
    return {"summary": report.summary, **{k: v for k, v in vars(report).items() if k != "generated_at"},
            "generated_at": report.generated_at.isoformat(), "day": day.isoformat()}


@router.get("/api/v1/rule-jobs")
async def rule_jobs(service: RulesDep, _: RulesWrite) -> dict[str, Any]:
    return await service.status()


@router.post("/api/v1/rule-jobs/{name}/run")
async def run_rule_job(name: str, service: RulesDep, _: RulesWrite) -> dict[str, str]:
    """Run a scheduled check now (recorded in the run records like a scheduled run)."""
    try:
        if service.scheduler is not None:
            detail = await service.scheduler.run_now(name)
        else:
            detail = await service.run_check(name, datetime.now(UTC))
    except KeyError as err:
        raise NotFound(str(err.args[0])) from None
    return {"job": name, "detail": detail}
