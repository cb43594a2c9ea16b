"""Who is looking at a dashboard page, in which language, and what the navigation offers them.

Every page takes `ViewerDep`: without a session it redirects to the sign-in page (and back afterwards); a page
whose role check (`viewer.may(...)`) fails answers `forbidden_page()`. `render()` fills the frame every template
extends (`base.html`):
`t`, the navigation, the language switch and whether live updates are on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from accounts.models import User
from accounts.permissions import Permission, Principal
from api.auth import ContextDep, resolve_principal
from api.i18n import LANG_COOKIE, LANGUAGES, Translator, choose_language, format_datetime
from fleet.kinds import CATALOG, DeviceKind

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES_DIR)


def may_read_fleet(principal: Principal) -> bool:
    """People with fleet:read see their markets' devices; a vendor (vendor:self) sees its own devices."""
    return principal.can(Permission.FLEET_READ) or principal.can(Permission.VENDOR_SELF)


@dataclass(frozen=True)
class NavItem:
    """One entry of the main navigation; `allowed` decides per principal (a page module declares its own)."""

    key: str  # catalog key of the label
    href: str
    allowed: Callable[[Principal], bool]
    section: str  # the `section` a page passes to render(), to mark the current entry


def may_read_alerts(principal: Principal) -> bool:
    return principal.can(Permission.ALERTS_READ)


def may_read_reports(principal: Principal) -> bool:
    return principal.can(Permission.REPORTS_READ)


def may_see_cameras(principal: Principal) -> bool:
    """Cameras watch a market's people: its staff see them (fleet:read); vendors, who sell devices, do not."""
    return principal.can(Permission.FLEET_READ)


def may_see_campaigns(principal: Principal) -> bool:
    """Campaigns are fleet-wide operations: people who may change the fleet or run them see them."""
    return principal.can(Permission.FIRMWARE_WRITE)


def may_read_prices(principal: Principal) -> bool:
    """Products, prices and shelf labels: like /api/v1/retail, fleet:read to look (prices:write to change)."""
    return principal.can(Permission.FLEET_READ)


def may_admin(principal: Principal) -> bool:
    return principal.can(Permission.PLATFORM_ADMIN)


NAV: list[NavItem] = [
    NavItem("nav.overview", "/overview", may_read_fleet, "overview"),
    NavItem("nav.fleet", "/fleet", may_read_fleet, "fleet"),
    NavItem("nav.alerts", "/alerts", may_read_alerts, "alerts"),
    NavItem("nav.ota", "/ota", may_see_campaigns, "ota"),
    NavItem("nav.prices", "/prices", may_read_prices, "prices"),
    NavItem("nav.labels", "/labels", may_read_prices, "labels"),
    NavItem("nav.cameras", "/cameras", may_see_cameras, "cameras"),
    NavItem("nav.reports", "/reports", may_read_reports, "reports"),
    NavItem("nav.vendors", "/admin/vendors", may_admin, "vendors"),
]


@dataclass
class Viewer:
    principal: Principal
    t: Translator
    live: bool  # an event bus is running: pages subscribe to /events/presence
    services: frozenset[str] = frozenset()  # names of the optional services this instance runs
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str:
        return self.t.language

    def kind_title(self, kind: DeviceKind | str) -> str:
        spec = CATALOG.get(DeviceKind(kind)) if kind in DeviceKind._value2member_map_ else None
        if spec is None:
            return str(kind)
        return spec.title_zh if self.language == "zh" else spec.title

    def nav(self) -> list[NavItem]:
        return [item for item in NAV if item.allowed(self.principal)]

    def runs(self, service: str) -> bool:
        """Whether the optional service (`ctx.services[service]`) runs on this instance."""
        return service in self.services

    def may(self, allowed: Callable[[Principal], bool]) -> bool:
        """Whether the page may be shown; a page answers `forbidden_page()` when not."""
        return allowed(self.principal)


async def language_for(request: Request, principal: Principal | None) -> str:
    cookie = request.cookies.get(LANG_COOKIE)
    account_language = None
    if cookie is None and principal is not None and principal.user_id is not None:
        found = await User.filter(id=principal.user_id).limit(1).values_list("language", flat=True)
        account_language = str(found[0]) if found else None
    return choose_language(cookie, account_language)


def sign_in_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status_code=303, headers={"Location": f"/login?next={quote(target, safe='')}"})


async def current_viewer(request: Request, ctx: ContextDep) -> Viewer:
    principal = await resolve_principal(request, ctx)
    if principal is None:
        raise sign_in_redirect(request)
    language = await language_for(request, principal)
    return Viewer(principal=principal, t=Translator(language), live=ctx.services.get("bus") is not None,
                  services=frozenset(name for name, service in ctx.services.items() if service is not None))


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def render(
    request: Request,
    viewer: Viewer | None,
    template: str,
    context: dict[str, Any],
    *,
    section: str = "",
    t: Translator | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    translate = viewer.t if viewer is not None else (t or Translator("zh"))
    frame = {
        "t": translate,
        "lang": translate.language,
        "html_lang": translate.html_lang,
        "languages": LANGUAGES,
        "viewer": viewer,
        "section": section,
        "nav": viewer.nav() if viewer is not None else [],
        "kind_title": viewer.kind_title if viewer is not None else str,
        "when": format_datetime,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    return templates.TemplateResponse(request, template, {**frame, **context}, status_code=status_code)


def forbidden_page(request: Request, viewer: Viewer) -> HTMLResponse:
    return render(request, viewer, "error.html", {"code": 403}, status_code=403)


def not_found_page(request: Request, viewer: Viewer) -> HTMLResponse:
    return render(request, viewer, "error.html", {"code": 404}, status_code=404)
