"""The one table that maps platform errors to HTTP answers; routes raise, they never build error responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fleet.errors import Conflict, Forbidden, InvalidRequest, MarketFleetError, NotFound, Unauthorised

STATUS_FOR: dict[type[MarketFleetError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidRequest: 422,
    Unauthorised: 401,
    Forbidden: 403,
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MarketFleetError)
    async def _platform_error(_request: Request, exc: MarketFleetError) -> JSONResponse:
        status = next((code for cls, code in STATUS_FOR.items() if isinstance(exc, cls)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)
