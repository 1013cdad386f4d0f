"""JSON error answers: every refusal of the API is ``{"error": REASON, "status": CODE}``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "install_error_handlers", "error_body"]


class ApiError(Exception):
    """A refusal with its HTTP status and the reason the client reads."""

    def __init__(self, status: int, reason: str, *, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def error_body(status: int, reason: str, **extra: Any) -> dict[str, Any]:
    return {"error": reason, "status": status, **extra}


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app) -> None:
    import psycopg

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.status, exc.reason), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(422, _validation_reason(exc)), status_code=422)

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_request: Request, _exc: psycopg.OperationalError):
        return JSONResponse(error_body(503, "the database cannot be reached; try again shortly"), status_code=503)
