"""One shape for every form action on a dashboard list page (prices, labels, alerts).

An action answers the page's refreshed rows with a line saying what happened, or why not, so htmx can swap
them in place: no right → the 403 page, the feature's service not running → 503, a refused change → the rows
with the reason and a 4xx status (a script or test sees the failure, a person sees the message).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response

from accounts.permissions import Permission
from api.dashboard.viewer import Viewer, forbidden_page, render
from fleet.errors import Conflict, InvalidRequest, NotFound

S = TypeVar("S")

REFUSALS = (NotFound, Conflict, InvalidRequest)


class Rows(Protocol):
    """Re-render the page's rows with a message line."""

    def __call__(self, message: str | None, *, error: bool = False, status_code: int = 200) -> Awaitable[Response]:
        ...


def refusal_status(err: Exception) -> int:
    return 404 if isinstance(err, NotFound) else 409 if isinstance(err, Conflict) else 422


async def page_action(
    request: Request,
    viewer: Viewer,
    *,
    permission: Permission,
    service: S | None,
    feature: str,
    work: Callable[[S], Awaitable[str]],
    rows: Rows,
    failed: str,
) -> Response:
    """Run `work` (which returns the success line) and answer `rows`; `failed` is the message key for a refusal."""
    if not viewer.principal.can(permission):
        return forbidden_page(request, viewer)
    if service is None:
        return render(request, viewer, "not_running.html", {"feature": feature}, status_code=503)
    try:
        message = await work(service)
    except REFUSALS as err:
        return await rows(viewer.t(failed, reason=str(err)), error=True, status_code=refusal_status(err))
    return await rows(message)
