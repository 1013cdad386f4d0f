"""The operators' application: the JSON API under ``/api`` and the web console at ``/``, in one FastAPI app.

``create_app(settings, session_key=...)`` wires the stores (``sinks``), the routers (``console.api``), the
pages (``console.web``), the body-size bound and the audit trail. ``vpp serve`` runs it on uvicorn.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from console.auth import RateLimit
from console.deps import require
from console.errors import install_error_handlers
from console.live import Broadcaster
from console.middleware import AuditTrail, BodyLimit

__all__ = ["create_app", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 64 * 1024
_HERE = Path(__file__).parent


def create_app(settings, *, session_key: bytes, rate_limit: RateLimit = RateLimit(), stream_poll_s: float = 1.0,
               keepalive_s: float = 15.0, max_body_bytes: int = MAX_BODY_BYTES, secure_cookies: bool = False) -> FastAPI:
    from sinks.auth_store import AuthStore

    from console.api import alerts, assets, audit, auth, dispatch, fleet, market, stream
    from console import web

    if len(session_key) < 32:
        raise ValueError("the session key must be at least 32 bytes")
    store = AuthStore(settings.postgres_dsn)
    broadcaster = Broadcaster(settings.postgres_dsn, poll_s=stream_poll_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await broadcaster.stop()

    # no /docs or /redoc (they load scripts from a CDN); the OpenAPI document needs a login like the rest
    app = FastAPI(title="vpp operators' API", version="1", lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None,
                  description="The virtual power plant's fleet, dispatch, alerts and market for operators. "
                              "Authenticate with POST /api/auth/token, then send 'Authorization: Bearer TOKEN'.")
    app.state.settings = settings
    app.state.store = store
    app.state.session_key = session_key
    app.state.rate_limit = rate_limit
    app.state.broadcaster = broadcaster
    app.state.keepalive_s = keepalive_s
    app.state.secure_cookies = secure_cookies
    install_error_handlers(app)
    for module in (auth, fleet, assets, dispatch, alerts, market, stream, audit):
        app.include_router(module.router)
    app.include_router(web.router)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # a huge body never reaches a route
    app.add_middleware(AuditTrail, store=store)  # outermost: a refused huge body is audited too
    return app
