"""Signing in and out of the dashboard, and switching its language.

The session token from `Accounts.login` becomes the HttpOnly, SameSite=Strict cookie `mf_session`, which
`api.auth.resolve_principal` accepts on every page and on the JSON API the pages call. The language choice is
the `mf_lang` cookie (a year); without it the account's `language` applies.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.auth import SESSION_COOKIE, AccountsDep, ContextDep, resolve_principal
from api.dashboard.viewer import language_for, render
from api.i18n import LANG_COOKIE, LANGUAGES, Translator
from api.routes.accounts import client_ip
from fleet.errors import Unauthorised

router = APIRouter()
LANG_COOKIE_MAX_AGE = 365 * 24 * 3600


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site: never another host (`//evil`, `/\\evil`, `https://…`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    return target


def _login_error(message: str) -> str:
    if "locked" in message:
        return "locked"
    if "too many" in message:
        return "throttled"
    return "credentials"


@router.get("/login")
async def login_page(request: Request, ctx: ContextDep, error: str | None = None, next: str | None = None) -> Response:
    principal = await resolve_principal(request, ctx)
    if principal is not None and error is None:
        return RedirectResponse(safe_next(next), status_code=303)
    t = Translator(await language_for(request, None))
    return render(
        request, None, "login.html",
        {"error": error if error in ("credentials", "locked", "throttled", "session") else None,
         "next": safe_next(next, "")},
        t=t,
    )


@router.post("/login")
async def login(
    request: Request,
    accounts: AccountsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form()] = "",
) -> Response:
    try:
        token, _ = await accounts.login(username.strip(), password, ip=client_ip(request))
    except Unauthorised as err:
        query = f"error={_login_error(str(err))}"
        if safe_next(next, ""):
            query += f"&next={quote(next, safe='')}"
        return RedirectResponse(f"/login?{query}", status_code=303)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.post("/logout")
async def logout(request: Request, accounts: AccountsDep) -> Response:
    await accounts.logout(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/lang/{language}")
async def switch_language(language: str, next: str | None = None) -> Response:
    """A plain link (works without JavaScript): remember the language, go back to the page."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if language in LANGUAGES:
        response.set_cookie(LANG_COOKIE, language, max_age=LANG_COOKIE_MAX_AGE, samesite="lax")
    return response
