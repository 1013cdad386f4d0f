"""Pure ASGI middleware: a bound on request bodies, and the audit log of every state-changing request.

Pure ASGI (not ``BaseHTTPMiddleware``) so server-sent event streams pass through untouched.
"""

from __future__ import annotations

import json
import logging

from starlette.concurrency import run_in_threadpool

from console.errors import error_body

__all__ = ["BodyLimit", "AuditTrail"]

_log = logging.getLogger(__name__)
_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _json_answer(send, status: int, reason: str) -> None:
    body = json.dumps(error_body(status, reason)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse a body larger than ``max_bytes`` with 413, whether announced (Content-Length) or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        reason = f"the request body is larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    return await _json_answer(send, 400, "Content-Length is not a byte count")
                if too_big:
                    return await _json_answer(send, 413, reason)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _json_answer(send, 413, reason)


class _TooLarge(Exception):
    pass


class AuditTrail:
    """After every POST/PUT/PATCH/DELETE: who (or anonymous), what, from where and the outcome (status)."""

    def __init__(self, app, store):
        self.app = app
        self.store = store

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _CHANGING:
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            state = scope.get("state") or {}
            principal = state.get("principal")
            actor = principal.name if principal is not None else state.get("audit_actor", "anonymous")
            client = scope.get("client")
            code = status["code"]
            outcome = "ok" if code < 400 else f"refused {code}"
            try:
                await run_in_threadpool(self.store.audit, actor, f"{scope['method']} {scope['path']}",
                                        target=state.get("audit_target"), address=client[0] if client else "unknown",
                                        outcome=outcome, detail={"status": code, **state.get("audit_detail", {})})
            except Exception:  # noqa: BLE001 - the answer is sent already; a lost audit row must be loud
                _log.exception("could not write the audit log for %s %s", scope["method"], scope["path"])
