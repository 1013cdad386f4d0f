"""The web console's pages: server-rendered Jinja2, a little vanilla JS (``static/console.js``), no CDN.

A session is a token of kind ``session`` in a cookie signed with the server's key (HttpOnly, SameSite=Strict).
Every page but ``/login`` needs one; without it the browser is sent to ``/login``. The pages read the JSON
API with the same cookie and listen to ``/api/stream``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from console.auth import role_at_least, sign, token_sha256, unsign
from console.deps import SESSION_COOKIE, principal_of
from console.errors import ApiError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
_PAGES = {"tree": "Fleet", "dispatch": "Dispatch", "alerts": "Alerts", "market": "Market"}


def _page(request: Request, principal, name: str, *, status_code: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, f"{name}.html", {
        "user": principal, "page": name, "pages": _PAGES, "can_operate": role_at_least(principal.role, "operator"),
        "is_admin": role_at_least(principal.role, "admin"), **context}, status_code=status_code)


async def _session(request: Request):
    try:
        return await principal_of(request)
    except ApiError:
        return None


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse("/login?next=" + quote(request.url.path), status_code=303)


async def _signed_in_page(request: Request, name: str, *, needed: str | None = None, **context) -> Response:
    """The page ``name`` for the session's user; to ``/login`` without a session; 403 below the ``needed`` role."""
    principal = await _session(request)
    if principal is None:
        return _to_login(request)
    if needed is not None and not role_at_least(principal.role, needed):
        return _page(request, principal, "forbidden", status_code=403, needed=needed)
    return _page(request, principal, name, **context)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the usual name
    return templates.TemplateResponse(request, "login.html", {"error": None, "next": _safe_next(next)})


def _safe_next(target: str) -> str:
    """Only a path of this site (never //host or a scheme): no open redirect."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


@router.post("/login")
async def login_submit(request: Request, username: str = Form("", max_length=64), password: str = Form("", max_length=1024),
                       next: str = Form("/", max_length=512)) -> Response:  # noqa: A002
    from console.api.auth import login

    try:
        token, expires_at, _role = await run_in_threadpool(login, request, username, password, kind="session")
    except ApiError as exc:
        return templates.TemplateResponse(request, "login.html", {"error": exc.reason, "next": _safe_next(next)},
                                          status_code=exc.status)
    answer = RedirectResponse(_safe_next(next), status_code=303)
    answer.set_cookie(SESSION_COOKIE, sign(token, request.app.state.session_key), httponly=True, samesite="strict",
                      secure=request.app.state.secure_cookies, expires=expires_at, path="/")
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    principal = await _session(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    token = unsign(cookie, request.app.state.session_key) if cookie else None
    if principal is not None:
        request.state.principal = principal
    if token:
        await run_in_threadpool(request.app.state.store.revoke_digest, token_sha256(token))
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    return answer


@router.get("/", response_class=HTMLResponse)
async def tree_page(request: Request, path: str = "") -> Response:
    return await _signed_in_page(request, "tree", path=path.strip("/")[:512])


@router.get("/nodes/{path:path}", response_class=HTMLResponse)
async def node_page(request: Request, path: str) -> Response:
    return await _signed_in_page(request, "node", path=path.strip("/")[:512])


@router.get("/dispatch", response_class=HTMLResponse)
async def dispatch_page(request: Request, command: str = "") -> Response:
    return await _signed_in_page(request, "dispatch", command=command[:200])


@router.get("/alerts", response_class=HTMLResponse)
async def alerts_page(request: Request) -> Response:
    return await _signed_in_page(request, "alerts")


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request) -> Response:
    return await _signed_in_page(request, "audit", needed="admin")


@router.get("/market", response_class=HTMLResponse)
async def market_page(request: Request) -> Response:
    return await _signed_in_page(request, "market")
