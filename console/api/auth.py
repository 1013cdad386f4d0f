"""``POST /api/auth/token``: a username and password for a bearer token (rate-limited); ``GET /api/auth/me``."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from console.auth import Principal, RateLimit, login_refusal, new_token
from console.deps import client_address, require
from console.errors import ApiError

__all__ = ["router", "login"]

router = APIRouter(prefix="/api/auth", tags=["auth"])
TOKEN_TTL = timedelta(hours=12)


class Credentials(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenAnswer(BaseModel):
    token: str
    expires_at: datetime
    role: str


def login(request: Request, username: str, password: str, *, kind: str) -> tuple[str, datetime, str]:
    """Check a password under the rate limits and issue a token of ``kind`` (runs in a worker thread)."""
    store = request.app.state.store
    limit: RateLimit = request.app.state.rate_limit
    address = client_address(request)
    request.state.audit_actor = username
    refusal = login_refusal(*store.login_failures(username, address, limit.window), limit)
    if refusal:
        raise ApiError(429, refusal, headers={"Retry-After": str(int(limit.window.total_seconds()))})
    user = store.check_password(username, password, address)
    if user is None:
        raise ApiError(401, "wrong username or password, or the user is disabled")
    token, digest = new_token()
    token_id, expires_at = store.create_token(user["name"], digest, kind=kind, expires_in=TOKEN_TTL)
    request.state.audit_detail = {"token_id": token_id, "kind": kind}
    return token, expires_at, user["role"]


@router.post("/token", response_model=TokenAnswer, responses={401: {}, 429: {}})
async def token(request: Request, credentials: Credentials) -> TokenAnswer:
    token, expires_at, role = await run_in_threadpool(login, request, credentials.username, credentials.password,
                                                      kind="login")
    return TokenAnswer(token=token, expires_at=expires_at, role=role)


@router.get("/me")
async def me(principal: Principal = Depends(require("viewer"))) -> dict:
    return {"name": principal.name, "role": principal.role, "via": principal.via}
