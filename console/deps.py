"""Request dependencies: who is asking (bearer token or session cookie) and whether their role suffices."""

from __future__ import annotations

from typing import Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from console.auth import Principal, check_role, token_sha256, unsign
from console.errors import ApiError

__all__ = ["SESSION_COOKIE", "CSRF_HEADER", "principal_of", "require", "client_address"]

SESSION_COOKIE = "vpp_session"
#: Cookie-authenticated requests that change state must carry this header: a cross-site form cannot set it.
CSRF_HEADER = "x-requested-with"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def principal_of(request: Request) -> Principal | None:
    """The authenticated user of a request, or None; a bad bearer token is a 401 (never silently anonymous)."""
    store = request.app.state.store
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "the Authorization header must be 'Bearer TOKEN'", headers={"WWW-Authenticate": "Bearer"})
        info = await run_in_threadpool(store.lookup_token, token_sha256(token.strip()))
        if info is None:
            raise ApiError(401, "the token is unknown, expired or revoked, or its user is disabled",
                           headers={"WWW-Authenticate": "Bearer"})
        return Principal(info.user_name, info.role, info.token_id, "bearer")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        token = unsign(cookie, request.app.state.session_key)
        if token is None:
            return None
        info = await run_in_threadpool(store.lookup_token, token_sha256(token))
        if info is None or info.kind != "session":
            return None
        return Principal(info.user_name, info.role, info.token_id, "cookie")
    return None


def require(role: str) -> Callable:
    """A dependency: the principal when their role is ``role`` or above; 401 unauthenticated, 403 too low."""

    async def dependency(request: Request) -> Principal:
        principal = await principal_of(request)
        if principal is None:
            raise ApiError(401, "authentication required: POST /api/auth/token, then send 'Authorization: Bearer TOKEN'",
                           headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        if principal.via == "cookie" and request.method not in _SAFE and CSRF_HEADER not in request.headers:
            raise ApiError(403, f"a console request that changes state must carry the {CSRF_HEADER} header")
        reason = check_role(principal.role, role)
        if reason:
            raise ApiError(403, reason)
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency
