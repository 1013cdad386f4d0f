"""Serving the project's small HTTP APIs (schema registry, market): an ASGI app on uvicorn, in a thread.

HTTP framing (Content-Length, chunked bodies, malformed requests: 400 and close), the header-size
bound (``h11_max_incomplete_event_size``), idle keep-alive connections (``timeout_keep_alive``)
and bounded concurrency (``limit_concurrency``: 503 beyond it) are uvicorn's. Two limits uvicorn
does not have are added here, small and standard:

* ``BodyLimits``, an ASGI middleware: a body larger than ``max_body_bytes`` is a 413 (by its
  Content-Length before a byte is read, or as it streams in), one that does not arrive within
  ``body_timeout_s`` is a 408; both answers close the connection.
* a header timeout: a connection whose request head is not complete within ``header_timeout_s``
  of its opening (or of the first byte of a further request) is closed, so silent or trickling
  clients cannot hold connections (uvicorn times out only idle keep-alive connections).
* a request with both Content-Length and Transfer-Encoding is a 400 and the connection closes
  (RFC 9112 section 6.3: a request-smuggling attempt; h11 would read it as chunked and keep it).

``BackgroundServer`` binds its socket at construction (the port is known, and an address in use
fails there), serves from ``start()`` in a daemon thread, and stops gracefully on ``stop()``.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.exceptions import HTTPException
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["BackgroundServer", "BearerToken", "BodyLimits", "ServerLimits"]

ErrorResponse = Callable[[int, str], Response]


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts. Defaults suit a small internal API."""

    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 30
    max_connections: int = 200


class BodyTooLarge(HTTPException):
    """The request body exceeds the limit (413) or did not arrive in time (408)."""


class BodyLimits:
    """ASGI middleware bounding request bodies by size and by the time they take to arrive."""

    def __init__(self, app: Any, *, max_body_bytes: int, body_timeout_s: float, error: ErrorResponse):
        self.app, self.max_body_bytes, self.body_timeout_s, self.error = app, max_body_bytes, body_timeout_s, error

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and b"transfer-encoding" in headers:  # RFC 9112 6.3: a smuggling attempt; close
            await self._refuse(400, "a request may not carry both Content-Length and Transfer-Encoding",
                               scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_body_bytes:  # h11 has checked it is a number
            await self._refuse(413, f"request body of {int(declared)} bytes exceeds the limit of "
                                    f"{self.max_body_bytes} bytes", scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> dict:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                raise BodyTooLarge(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                                   headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(413, f"request body exceeds the limit of {self.max_body_bytes} bytes",
                                       headers={"Connection": "close"})
            return message

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTooLarge as exc:  # the app did not render it (its own handler normally does)
            if started:
                raise
            await self._refuse(exc.status_code, exc.detail, scope, receive, send)

    async def _refuse(self, status: int, message: str, scope: dict, receive: Callable, send: Callable) -> None:
        response = self.error(status, message)
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)


class BearerToken:
    """ASGI middleware: every request needs ``Authorization: Bearer <token>``, else a 401 rendered by ``error``."""

    def __init__(self, app: Any, *, token: str, error: ErrorResponse):
        if not token:
            raise ValueError("BearerToken needs a token")
        self.app, self._token, self.error = app, token.encode(), error

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token):
            await self.app(scope, receive, send)
            return
        response = self.error(401, "this API needs the header Authorization: Bearer <token> with its token")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


class _HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is not complete in time.

    The clock starts when the connection opens and, on a kept-alive connection, with the first
    byte of each further request (between requests uvicorn's keep-alive timeout applies).
    """

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._timed_cycle is not self.cycle:  # a new request head begins
            self._arm_header_timer()
        super().data_received(data)

    def _arm_header_timer(self) -> None:
        self._timed_cycle = self.cycle  # the request before the one whose head is timed (None: the first)
        self.loop.call_later(self.header_timeout_s, self._header_deadline, self.cycle)

    def _header_deadline(self, cycle_at_arming: Any) -> None:
        # no new request began since the timer was armed, and h11 still waits for a complete request head
        if self.cycle is cycle_at_arming and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _protocol_with(header_timeout_s: float) -> type[H11Protocol]:
    return type("HeaderTimeoutH11", (_HeaderTimeoutH11,), {"header_timeout_s": header_timeout_s})


class BackgroundServer:
    """``app`` served by uvicorn on ``host:port`` (0: a free port) with ``limits``, in a daemon thread."""

    def __init__(self, app: Any, host: str, port: int, limits: ServerLimits, *, name: str):
        self._socket = socket.create_server((host, port), reuse_port=False)
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", http=_protocol_with(limits.header_timeout_s),
            limit_concurrency=limits.max_connections, timeout_keep_alive=limits.keep_alive_s,
            h11_max_incomplete_event_size=limits.max_header_bytes, timeout_graceful_shutdown=5,
            server_header=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._name = name

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> "BackgroundServer":
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already started")
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=self._name, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self._name} did not start (see the log)")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._thread = None
        self._socket.close()
