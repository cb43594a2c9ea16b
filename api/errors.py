"""The one table that maps platform errors to HTTP answers; routes raise, they never build error responses.

Besides the platform's own errors, the few the database layer raises for bad input (a number beyond 64 bits,
a text longer than its column, a duplicate) are answered here as 4xx, once, instead of a 500 in every route.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tortoise.exceptions import DoesNotExist, IntegrityError
from tortoise.exceptions import ValidationError as OrmValidationError

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

    @app.exception_handler(OverflowError)
    async def _overflow(_request: Request, _exc: OverflowError) -> JSONResponse:
        return JSONResponse({"detail": "a number is out of range: ids and counts are at most 2**63 - 1"},
                            status_code=422)

    @app.exception_handler(OrmValidationError)
    async def _too_long(_request: Request, exc: OrmValidationError) -> JSONResponse:
        return JSONResponse({"detail": f"invalid value: {exc}"[:500]}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _duplicate(_request: Request, _exc: IntegrityError) -> JSONResponse:
        return JSONResponse({"detail": "conflicts with stored data (a duplicate, or a reference to nothing)"},
                            status_code=409)

    @app.exception_handler(DoesNotExist)
    async def _missing(_request: Request, exc: DoesNotExist) -> JSONResponse:
        return JSONResponse({"detail": f"not found: {exc}"[:300]}, status_code=404)
