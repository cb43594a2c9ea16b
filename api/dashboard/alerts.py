"""The alerts inbox: active alerts live, acknowledge / comment / assign / resolve, the handling archive, and
removal tasks for failed food tests.

Everything goes through the rules service (`ctx.services["rules"]`), scoped to the viewer's markets like
/api/v1/alerts; without the service the page says the rules engine is not running. The table is an htmx
fragment (`/alerts/rows`) that the page refreshes whenever /events/alerts reports a change, so an alert a
device raises appears without reloading; each action answers the refreshed fragment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from accounts.permissions import Permission
from api.auth import ContextDep, RegistryDep, resolve_principal
from api.dashboard.actions import Rows, page_action
from api.dashboard.queries import SEVERITIES, visible_markets
from api.dashboard.viewer import Viewer, ViewerDep, forbidden_page, may_read_alerts, render
from api.sse import alert_event_stream
from fleet.errors import InvalidRequest, NotFound

router = APIRouter()
View = Literal["active", "archive", "tasks"]


def _service(ctx: ContextDep) -> Any:
    return ctx.services.get("rules")


async def _rows_context(viewer: Viewer, service: Any, view: str, severity: str, market: str) -> dict[str, Any]:
    from rules.schemas import AlertFilter

    scope = viewer.principal.markets
    if view == "tasks":
        tasks = await service.alerts.removal_tasks("open", market or None, markets=scope, limit=200)
        return {"tasks": tasks, "alerts": []}
    query = AlertFilter(status="resolved" if view == "archive" else "active",
                        severity=severity if severity in SEVERITIES else None,  # type: ignore[arg-type]
                        market=market or None, limit=200)
    return {"alerts": await service.alerts.search(query, markets=scope), "tasks": []}


def _filters(view: str, severity: str, market: str) -> dict[str, str]:
    return {"view": view, "severity": severity, "market": market}


@router.get("/alerts")
async def alerts_page(
    request: Request, viewer: ViewerDep, ctx: ContextDep, registry: RegistryDep,
    view: View = "active",
    severity: Annotated[str, Query(max_length=16)] = "",
    market: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    if not viewer.may(may_read_alerts):
        return forbidden_page(request, viewer)
    service = _service(ctx)
    principal = viewer.principal
    markets = await visible_markets(registry, principal.markets, principal.vendor_id)
    context: dict[str, Any] = {"markets": markets, "filters": _filters(view, severity, market),
                               "severities": SEVERITIES, "running": service is not None,
                               "may_write": principal.can(Permission.ALERTS_WRITE),
                               "timezones": {m.code: m.timezone for m in markets}, "message": None}
    if service is not None:
        context.update(await _rows_context(viewer, service, view, severity, market))
    live = "/events/alerts" + (f"?market={market}" if market else "")
    return render(request, viewer, "alerts.html", {**context, "alerts_live_url": live if service else ""},
                  section="alerts")


@router.get("/alerts/rows")
async def alert_rows(
    request: Request, viewer: ViewerDep, ctx: ContextDep,
    view: View = "active",
    severity: Annotated[str, Query(max_length=16)] = "",
    market: Annotated[str, Query(max_length=32)] = "",
    message: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    if not viewer.may(may_read_alerts):
        return forbidden_page(request, viewer)
    service = _service(ctx)
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": "rules"})
    return await _render_rows(request, viewer, service, view, severity, market, message or None)


async def _render_rows(request: Request, viewer: Viewer, service: Any, view: str, severity: str, market: str,
                       message: str | None, error: bool = False, status_code: int = 200) -> Response:
    principal = viewer.principal
    markets = await visible_markets(request.app.state.ctx.registry, principal.markets, principal.vendor_id)
    context = await _rows_context(viewer, service, view, severity, market)
    return render(request, viewer, "alert_rows.html", {
        **context, "filters": _filters(view, severity, market), "may_write": principal.can(Permission.ALERTS_WRITE),
        "timezones": {m.code: m.timezone for m in markets}, "message": message, "error": error,
    }, status_code=status_code)


def _rows(request: Request, viewer: Viewer, ctx: ContextDep, view: str, severity: str, market: str) -> Rows:
    async def rows(message: str | None, *, error: bool = False, status_code: int = 200) -> Response:
        return await _render_rows(request, viewer, _service(ctx), view, severity, market, message, error=error,
                                  status_code=status_code)

    return rows


@router.post("/alerts/{alert_id}/{action}")
async def alert_action(
    request: Request, viewer: ViewerDep, ctx: ContextDep, alert_id: int,
    action: Literal["ack", "resolve", "assign", "comment"],
    comment: Annotated[str, Form(max_length=4000)] = "",
    assignee: Annotated[str, Form(max_length=100)] = "",
    view: Annotated[View, Form()] = "active",
    severity: Annotated[str, Form(max_length=16)] = "",
    market: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """One handling step; answers the refreshed rows with a line saying what happened (or why not)."""
    actor, scope, t = viewer.principal.actor, viewer.principal.markets, viewer.t
    comment = comment.strip()

    async def work(service: Any) -> str:
        if action == "ack":
            await service.alerts.acknowledge(alert_id, actor, comment, markets=scope)
        elif action == "resolve":
            await service.alerts.resolve(alert_id, actor, comment, markets=scope)
        elif action == "assign":
            if not assignee.strip():
                raise InvalidRequest(t("alerts.need_assignee"))
            await service.alerts.assign(alert_id, assignee.strip(), actor, comment, markets=scope)
        else:
            if not comment:
                raise InvalidRequest(t("alerts.need_comment"))
            await service.alerts.comment(alert_id, actor, comment, markets=scope)
        return t(f"alerts.done.{action}", id=alert_id)

    return await page_action(request, viewer, permission=Permission.ALERTS_WRITE, service=_service(ctx),
                             feature="rules", work=work, rows=_rows(request, viewer, ctx, view, severity, market),
                             failed="alerts.failed")


@router.post("/removal-tasks/{task_id}/close")
async def close_task(
    request: Request, viewer: ViewerDep, ctx: ContextDep, task_id: int,
    action_taken: Annotated[str, Form(max_length=4000)] = "",
    comment: Annotated[str, Form(max_length=4000)] = "",
    market: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    t = viewer.t

    async def work(service: Any) -> str:
        if not action_taken.strip():
            raise InvalidRequest(t("tasks.need_action"))
        try:
            await service.alerts.close_removal_task(task_id, viewer.principal.actor, action_taken.strip(),
                                                    comment.strip(), markets=viewer.principal.markets)
        except ValidationError as err:
            raise InvalidRequest(str(err)) from None
        return t("tasks.closed", id=task_id)

    return await page_action(request, viewer, permission=Permission.ALERTS_WRITE, service=_service(ctx),
                             feature="rules", work=work, rows=_rows(request, viewer, ctx, "tasks", "", market),
                             failed="alerts.failed")


@router.get("/alerts/{alert_id}")
async def alert_detail(request: Request, viewer: ViewerDep, ctx: ContextDep, alert_id: int) -> Response:
    if not viewer.may(may_read_alerts):
        return forbidden_page(request, viewer)
    service = _service(ctx)
    if service is None:
        return render(request, viewer, "alert_detail.html", {"alert": None, "running": False}, section="alerts")
    try:
        alert = await service.alerts.detail(alert_id, markets=viewer.principal.markets)
    except NotFound:
        return render(request, viewer, "error.html", {"code": 404}, status_code=404)
    market = await ctx.registry.list_markets([alert.market]) if alert.market else []
    return render(request, viewer, "alert_detail.html",
                  {"alert": alert, "running": True, "timezone": market[0].timezone if market else None,
                   "may_write": viewer.principal.can(Permission.ALERTS_WRITE)}, section="alerts")


@router.get("/events/alerts")
async def alert_events(
    request: Request, ctx: ContextDep, market: Annotated[str, Query(max_length=32)] = ""
) -> Response:
    """Server-sent alert changes the viewer may see (`event: alert.opened` …); 204 without a rules service,
    which tells EventSource not to reconnect."""
    principal = await resolve_principal(request, ctx)
    if principal is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    if not may_read_alerts(principal):
        return Response("this role may not see alerts", status_code=403, media_type="text/plain")
    service = _service(ctx)
    if service is None:
        return Response(status_code=204)

    from rules.routing import in_markets  # platform alerts (no market) concern every market

    def accept(message: dict[str, Any]) -> bool:
        where = message["alert"].get("market")
        in_scope = in_markets(where, message["alert"].get("category"), principal.markets)
        return in_scope and (not market or where == market)

    return alert_event_stream(service.stream.subscribe(accept))
