"""HTTP front of the schema registry: the subset of Confluent's REST API that clients use.

A Starlette app served by uvicorn (``vpp.asgi``): HTTP framing, header limits, keep-alive and
bounded concurrency are the server's; bodies are bounded to ``MAX_BODY_BYTES`` (413) and
``ServerLimits.body_timeout_s`` (408). Every answer our app gives, including 404 for unknown
paths and 405 (with ``Allow``) for methods a path does not take, is JSON of type
``application/vnd.schemaregistry.v1+json`` with Confluent's body ``{"error_code": N, "message":
"..."}``; a request uvicorn cannot parse gets its plain 400 and a closed connection. Only Avro
schemas without references are accepted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from opentelemetry import metrics, trace
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from vpp.asgi import BackgroundServer, BodyLimits, ServerLimits
from vpp.errors import redact_dsn
from devtools.registry.api import RegistryApi
from devtools.registry.auth import BasicAuth, Identity
from devtools.registry.store import RegistryError, RegistryStore

__all__ = ["RegistryServer", "serve", "build_app", "CONTENT_TYPE", "MAX_BODY_BYTES"]

log = logging.getLogger("devtools.registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPTED_BODY_TYPES = (
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
)
MAX_BODY_BYTES = 16 * 1024 * 1024  # far above any real schema; larger bodies are refused with 413
LIMITS = ServerLimits(max_body_bytes=MAX_BODY_BYTES, keep_alive_s=60)
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "DELETE")

#: path -> {HTTP method: RegistryApi method}
_PATHS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/", {"GET": "root"}),
    ("/schemas/types", {"GET": "schema_types"}),
    ("/subjects", {"GET": "list_subjects"}),
    ("/subjects/{subject}/versions", {"GET": "list_versions", "POST": "register"}),
    ("/subjects/{subject}", {"POST": "lookup", "DELETE": "delete_subject"}),
    ("/subjects/{subject}/versions/{version}", {"GET": "get_version", "DELETE": "delete_version"}),
    ("/subjects/{subject}/versions/{version}/schema", {"GET": "get_version_schema"}),
    ("/schemas/ids/{schema_id}", {"GET": "schema_by_id"}),
    ("/schemas/ids/{schema_id}/schema", {"GET": "schema_text_by_id"}),
    ("/schemas/ids/{schema_id}/versions", {"GET": "schema_id_versions"}),
    ("/schemas/ids/{schema_id}/subjects", {"GET": "schema_id_subjects"}),
    ("/compatibility/subjects/{subject}/versions/{version}", {"POST": "test_against_version"}),
    ("/compatibility/subjects/{subject}/versions", {"POST": "test_against_all"}),
    ("/config", {"GET": "get_global_config", "PUT": "put_global_config", "DELETE": "delete_global_config"}),
    ("/config/{subject}", {"GET": "get_subject_config", "PUT": "put_subject_config",
                           "DELETE": "delete_subject_config"}),
    ("/associations/resources/{namespace}/{resource}", {"GET": "associations"}),
)

_tracer = trace.get_tracer("devtools.registry")
_requests = metrics.get_meter("devtools.registry").create_counter(
    "devtools.registry.requests", unit="{request}", description="schema registry requests by method and HTTP status")


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, headers=headers, media_type=CONTENT_TYPE)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Confluent's error body; HTTP-level errors carry their status as the error code."""
    return _json(status, {"error_code": status, "message": message}, headers)


def _auth_error(status: int, error_code: int, message: str) -> Response:
    return _json(status, {"error_code": error_code, "message": message})


def _registry_error(exc: RegistryError) -> Response:
    return _json(exc.http_status, {"error_code": exc.error_code, "message": exc.message})


def _json_body(raw: bytes, content_type: str | None) -> Any:
    if not raw:
        return None
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind not in _ACCEPTED_BODY_TYPES:
        raise RegistryError(f"Unsupported Content-Type {kind!r}; send {CONTENT_TYPE} or application/json",
                            http_status=415, error_code=415)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"request body is not valid JSON: {exc}", http_status=400, error_code=400) from exc


def _without_secrets(text: str, dsn: str) -> str:
    """``text`` with the DSN and its password replaced by their redacted form."""
    redacted = redact_dsn(dsn)
    text = text.replace(dsn, redacted)
    password = _dsn_password(dsn)
    return text.replace(password, "***") if password else text


def _dsn_password(dsn: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn).get("password") or None
    except Exception:  # noqa: BLE001 - an unparsable DSN: nothing more to hide than the DSN itself
        return None


def _endpoint(api: RegistryApi, names: dict[str, str]):
    async def endpoint(request: Request) -> Response:
        name = names["GET" if request.method == "HEAD" else request.method]
        try:
            body = _json_body(await request.body(), request.headers.get("content-type"))
            query = {key: request.query_params.getlist(key) for key in request.query_params.keys()}
            payload = await run_in_threadpool(getattr(api, name), query, body, *request.path_params.values())
        except RegistryError as exc:
            return _registry_error(exc)
        except HTTPException:
            raise
        except ClientDisconnect:  # the body never came whole (uvicorn has answered a malformed one with 400)
            return error_response(400, "the client closed the connection before the request body was complete")
        except Exception as exc:  # noqa: BLE001 - Confluent's 50001 rather than a dropped connection
            reason = _without_secrets(f"{type(exc).__name__}: {exc}", api.store.dsn)
            log.error("registry request %s %s failed: %s", request.method, request.url.path, reason)
            return _json(500, {"error_code": 50001, "message": f"Error in the backend data store: {reason}"})
        return _json(200, payload)

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
        headers["Allow"] = ", ".join(m for m in _METHOD_ORDER if m in allowed)
        message = f"HTTP method {request.method} not allowed on {request.url.path}; allowed: {headers['Allow']}"
    elif exc.status_code == 404:
        message = f"HTTP 404 Not Found: no endpoint {request.method} {request.url.path}"
    else:
        message = exc.detail
    return error_response(exc.status_code, message, headers)


class _Observed:
    """ASGI middleware: a span and a counted request per answer (method, HTTP status)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def observed_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with _tracer.start_as_current_span(f"registry {scope['method']}") as span:
            try:
                await self.app(scope, receive, observed_send)
            finally:
                span.set_attribute("http.response.status_code", status)
                _requests.add(1, {"method": scope["method"], "status": status})


def database_ready(store: RegistryStore) -> tuple[bool, str]:
    """Whether the registry's database answers ``SELECT 1``, and why not (no password in the reason)."""
    from vpp.errors import postgres_reason

    try:
        with store._pool.connection() as conn:
            conn.execute("SELECT 1")
        return True, "database answers"
    except psycopg.Error as exc:
        return False, postgres_reason(exc)


def _ready_endpoint(store: RegistryStore):
    async def ready(request: Request) -> Response:
        """Readiness (Kubernetes): 200 when the registry's database answers, else 503 with the reason."""
        ok, detail = await run_in_threadpool(database_ready, store)
        return _json(200 if ok else 503, {"ready": ok, "detail": detail})

    return ready


def build_app(store: RegistryStore, limits: ServerLimits = LIMITS, identities: dict[str, Identity] | None = None
              ) -> Starlette:
    """The registry as an ASGI app over ``store``; with ``identities``, only they may use it (``devtools.registry.auth``).

    ``GET /`` (liveness) and ``GET /ready`` (readiness: the database answers) need no identity."""
    api = RegistryApi(store)
    routes = [Route("/ready", _ready_endpoint(store), methods=["GET", "HEAD"])]
    routes += [Route(path, _endpoint(api, names), methods=list(names)) for path, names in _PATHS]
    middleware = [Middleware(_Observed)]
    if identities:
        middleware.append(Middleware(BasicAuth, identities=identities, error=_auth_error))
    middleware.append(Middleware(BodyLimits, max_body_bytes=limits.max_body_bytes, body_timeout_s=limits.body_timeout_s,
                                 error=error_response))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _http_error})


class RegistryServer:
    """The registry on ``host:port`` backed by PostgreSQL at ``dsn``.

    ``start()`` serves in a background thread (for tests and embedding);
    ``stop()`` shuts it down. Port 0 picks a free port; read ``url`` after ``start()``.
    With ``identities`` (user -> ``Identity``) every request but ``GET /`` needs basic auth.
    """

    def __init__(self, host: str, port: int, dsn: str, *, limits: ServerLimits = LIMITS,
                 identities: dict[str, Identity] | None = None):
        self.host, self.port, self.dsn, self.limits, self.identities = host, port, dsn, limits, identities
        self._store: RegistryStore | None = None
        self._server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("RegistryServer.url is known only after start()")
        return self._server.url

    def start(self) -> "RegistryServer":
        if self._server is not None:
            raise RuntimeError("RegistryServer already started")
        self._store = RegistryStore(self.dsn)
        try:
            self._store.create_tables()
            self._server = BackgroundServer(build_app(self._store, self.limits, self.identities), self.host, self.port, self.limits,
                                            name="schema-registry").start()
        except BaseException:
            self._store.close()
            self._store = None
            raise
        log.info("schema registry listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __repr__(self) -> str:
        return f"RegistryServer({self.host!r}, {self.port}, {redact_dsn(self.dsn)!r}, identities={self.identities!r})"

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(host: str, port: int, dsn: str) -> RegistryServer:
    """Start a registry in a background thread and return it (call ``stop()`` when done)."""
    return RegistryServer(host, port, dsn).start()
