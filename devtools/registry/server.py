"""HTTP front of the schema registry: the subset of Confluent's REST API that clients use.

Served with the standard library (``ThreadingHTTPServer``, HTTP/1.1 keep-alive).
Request bodies are framed by Content-Length or ``Transfer-Encoding: chunked``
(at most ``MAX_BODY_BYTES``); a body that cannot be delimited is a JSON 4xx
and the connection is closed. Every answer, including the standard library's
own errors and 405 for methods no route takes, is JSON.
Responses are ``application/vnd.schemaregistry.v1+json``; errors carry
Confluent's body ``{"error_code": N, "message": "..."}``. Only Avro schemas
without references are accepted.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from opentelemetry import metrics, trace

from devtools.registry.compat import COMPATIBILITY_LEVELS, InvalidSchemaError, canonical_schema_text, is_compatible, schema_fingerprint
from devtools.registry.store import RegistryError, RegistryStore, SchemaNotFoundError, SubjectVersion

__all__ = ["RegistryServer", "serve", "CONTENT_TYPE"]

log = logging.getLogger("devtools.registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPTED_BODY_TYPES = (
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
)
_MAX_VERSION = 2**31 - 1
MAX_BODY_BYTES = 16 * 1024 * 1024  # far above any real schema; larger bodies are refused with 413
_MAX_CHUNK_LINE = 1024


class _MethodNotAllowed(RegistryError):
    def __init__(self, method: str, path: str, allowed: list[str]):
        super().__init__(
            f"HTTP method {method} not allowed on {path or '/'}; allowed: {', '.join(allowed)}",
            http_status=405,
            error_code=405,
        )
        self.allowed = allowed


def _invalid_schema(message: str) -> RegistryError:
    return RegistryError(message, http_status=422, error_code=42201)


def _parse_version(raw: str) -> int | None:
    """A version path segment: ``latest`` / ``-1`` -> None, else 1..2^31-1; anything else is 42202."""
    if raw == "latest" or raw == "-1":
        return None
    if re.fullmatch(r"[0-9]{1,10}", raw) and 1 <= int(raw) <= _MAX_VERSION:
        return int(raw)
    raise RegistryError(
        f"The specified version '{raw}' is not a valid version id. "
        'Allowed values are between [1, 2^31-1] and the string "latest"',
        http_status=422,
        error_code=42202,
    )


def _parse_level(body: Any) -> str:
    level = body.get("compatibility") or body.get("compatibilityLevel") if isinstance(body, dict) else None
    if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
        raise RegistryError(
            f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, full, "
            "backward_transitive, forward_transitive, and full_transitive",
            http_status=422,
            error_code=42203,
        )
    return level.upper()


def _schema_from_request(body: Any) -> tuple[str, str]:
    """Validate a register/lookup/compatibility body; returns (canonical text, fingerprint)."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str) or not body["schema"].strip():
        raise _invalid_schema('Empty schema: the request body must be a JSON object with a "schema" string')
    schema_type = str(body.get("schemaType") or "AVRO")
    if schema_type.upper() != "AVRO":
        raise _invalid_schema(
            f"Schema type {schema_type!r} is not supported: this registry only supports AVRO schemas"
        )
    if body.get("references"):
        raise _invalid_schema("Schema references are not supported by this registry; inline the referenced types")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported):
            raise _invalid_schema(f"'{unsupported}' (data contracts) is not supported by this registry")
    try:
        text = canonical_schema_text(body["schema"])
    except InvalidSchemaError as exc:
        raise _invalid_schema(f"Invalid schema {body['schema']}: {exc}") from exc
    return text, schema_fingerprint(text)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _version_body(row: SubjectVersion) -> dict[str, Any]:
    return {"subject": row.subject, "version": row.version, "id": row.schema_id, "schema": row.schema_text}


class _Api:
    """Endpoint implementations: (query, body, *path params) -> JSON-able result."""

    def __init__(self, store: RegistryStore):
        self.store = store

    def root(self, q, body):
        return {}

    def schema_types(self, q, body):
        return ["AVRO"]

    def list_subjects(self, q, body):
        subjects = self.store.subjects(include_deleted=_flag(q, "deleted") or _flag(q, "deleted_only"))
        if _flag(q, "deleted_only"):
            live = set(self.store.subjects())
            subjects = [s for s in subjects if s not in live]
        prefix = q.get("subjectPrefix", [""])[-1]
        return _page([s for s in subjects if s.startswith(prefix)], q)

    def list_versions(self, q, body, subject):
        versions = self.store.versions(subject, include_deleted=_flag(q, "deleted") or _flag(q, "deleted_only"))
        if _flag(q, "deleted_only"):
            live = {row.version for row in self.store.live_versions(subject)}
            versions = [v for v in versions if v not in live]
        return _page(versions, q)

    def associations(self, q, body, namespace, resource):
        return []  # associations are not supported; an empty list lets clients fall back to topic naming

    def register(self, q, body, subject):
        text, fingerprint = _schema_from_request(body)
        reg = self.store.register(subject, text, fingerprint)
        if reg.created:
            log.info("registered schema id %d as %s version %d", reg.schema_id, subject, reg.version)
        return {"id": reg.schema_id, "subject": reg.subject, "version": reg.version}

    def lookup(self, q, body, subject):
        text, fingerprint = _schema_from_request(body)
        row = self.store.find_in_subject(subject, fingerprint, include_deleted=_flag(q, "deleted"))
        return _version_body(row)

    def delete_subject(self, q, body, subject):
        return self.store.delete_subject(subject, permanent=_flag(q, "permanent"))

    def get_version(self, q, body, subject, version):
        number = _parse_version(version)
        return _version_body(self.store.subject_version(subject, number, include_deleted=_flag(q, "deleted")))

    def get_version_schema(self, q, body, subject, version):
        number = _parse_version(version)
        return json.loads(self.store.subject_version(subject, number, include_deleted=_flag(q, "deleted")).schema_text)

    def delete_version(self, q, body, subject, version):
        number = _parse_version(version)
        return self.store.delete_version(subject, number, permanent=_flag(q, "permanent"))

    def schema_by_id(self, q, body, schema_id):
        return {"schema": self.store.schema_text(_schema_id(schema_id))}

    def schema_text_by_id(self, q, body, schema_id):
        return json.loads(self.store.schema_text(_schema_id(schema_id)))

    def schema_id_versions(self, q, body, schema_id):
        usages = self.store.schema_usages(_schema_id(schema_id), include_deleted=_flag(q, "deleted"))
        return [{"subject": s, "version": v} for s, v in usages]

    def schema_id_subjects(self, q, body, schema_id):
        usages = self.store.schema_usages(_schema_id(schema_id), include_deleted=_flag(q, "deleted"))
        return sorted({s for s, _ in usages})

    def test_against_version(self, q, body, subject, version):
        text, _ = _schema_from_request(body)
        number = _parse_version(version)
        if number is None and not self.store.live_versions(subject):
            return _compat_result([], q)  # nothing registered yet: anything is compatible
        row = self.store.subject_version(subject, number)
        level = self.store.effective_config(subject)
        return _compat_result(is_compatible(level, text, [row.schema_text], labels=[f"version {row.version}"]), q)

    def test_against_all(self, q, body, subject):
        text, _ = _schema_from_request(body)
        rows = self.store.live_versions(subject)
        level = self.store.effective_config(subject)
        problems = is_compatible(level, text, [r.schema_text for r in rows], labels=[f"version {r.version}" for r in rows])
        return _compat_result(problems, q)

    def get_global_config(self, q, body):
        return {"compatibilityLevel": self.store.get_config()}

    def put_global_config(self, q, body):
        level = _parse_level(body)
        self.store.set_config(level)
        return {"compatibility": level}

    def delete_global_config(self, q, body):
        removed = self.store.delete_config()
        return {"compatibilityLevel": removed or self.store.get_config()}

    def get_subject_config(self, q, body, subject):
        level = self.store.get_config(subject)
        if level is None and _flag(q, "defaultToGlobal"):
            level = self.store.get_config()
        if level is None:
            raise _no_subject_config(subject)
        return {"compatibilityLevel": level}

    def put_subject_config(self, q, body, subject):
        level = _parse_level(body)
        self.store.set_config(level, subject)
        return {"compatibility": level}

    def delete_subject_config(self, q, body, subject):
        removed = self.store.delete_config(subject)
        if removed is None:
            raise _no_subject_config(subject)
        return {"compatibilityLevel": removed}


def _page(items: list[Any], q: dict[str, list[str]]) -> list[Any]:
    """Confluent's offset/limit pagination (a negative limit means no limit)."""
    try:
        offset = max(int(q.get("offset", ["0"])[-1]), 0)
        limit = int(q.get("limit", ["-1"])[-1])
    except ValueError as exc:
        raise RegistryError(f"offset and limit must be integers: {exc}", http_status=400, error_code=400) from exc
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _schema_id(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        raise SchemaNotFoundError(f"Schema {raw} not found: ids are positive integers")
    return int(raw)


def _no_subject_config(subject: str) -> RegistryError:
    return RegistryError(
        f"Subject '{subject}' does not have subject-level compatibility configured",
        http_status=404,
        error_code=40408,
    )


def _compat_result(problems: list[str], q: dict[str, list[str]]) -> dict[str, Any]:
    result: dict[str, Any] = {"is_compatible": not problems}
    if _flag(q, "verbose"):
        result["messages"] = problems
    return result


_SEG = r"([^/]+)"
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(f"^{pattern}/?$"), name)
    for method, pattern, name in (
        ("GET", r"", "root"),
        ("GET", r"/schemas/types", "schema_types"),
        ("GET", r"/subjects", "list_subjects"),
        ("GET", rf"/subjects/{_SEG}/versions", "list_versions"),
        ("POST", rf"/subjects/{_SEG}/versions", "register"),
        ("POST", rf"/subjects/{_SEG}", "lookup"),
        ("DELETE", rf"/subjects/{_SEG}", "delete_subject"),
        ("GET", rf"/subjects/{_SEG}/versions/{_SEG}", "get_version"),
        ("GET", rf"/subjects/{_SEG}/versions/{_SEG}/schema", "get_version_schema"),
        ("DELETE", rf"/subjects/{_SEG}/versions/{_SEG}", "delete_version"),
        ("GET", rf"/schemas/ids/{_SEG}", "schema_by_id"),
        ("GET", rf"/schemas/ids/{_SEG}/schema", "schema_text_by_id"),
        ("GET", rf"/schemas/ids/{_SEG}/versions", "schema_id_versions"),
        ("GET", rf"/schemas/ids/{_SEG}/subjects", "schema_id_subjects"),
        ("POST", rf"/compatibility/subjects/{_SEG}/versions/{_SEG}", "test_against_version"),
        ("POST", rf"/compatibility/subjects/{_SEG}/versions", "test_against_all"),
        ("GET", r"/config", "get_global_config"),
        ("PUT", r"/config", "put_global_config"),
        ("DELETE", r"/config", "delete_global_config"),
        ("GET", rf"/config/{_SEG}", "get_subject_config"),
        ("PUT", rf"/config/{_SEG}", "put_subject_config"),
        ("DELETE", rf"/config/{_SEG}", "delete_subject_config"),
        ("GET", rf"/associations/resources/{_SEG}/{_SEG}", "associations"),
    )
)


_tracer = trace.get_tracer("devtools.registry")
_requests = metrics.get_meter("devtools.registry").create_counter(
    "devtools.registry.requests", unit="{request}", description="schema registry requests by method and HTTP status")


def _make_handler(api: _Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vpp-schema-registry/0.1"
        timeout = 60  # idle keep-alive connections are closed after this many seconds
        disable_nagle_algorithm = True  # headers and body go out in two writes; avoid 40 ms delayed-ACK stalls

        def _dispatch(self) -> None:
            with _tracer.start_as_current_span(f"registry {self.command}") as span:
                status = self._handle()
                span.set_attribute("http.response.status_code", status)
            _requests.add(1, {"method": self.command, "status": status})

        def _handle(self) -> int:
            method, status, payload = self.command, 200, None
            extra_headers: dict[str, str] = {}
            try:
                raw_body = self._read_body()
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                endpoint, params = self._route(method, url.path.rstrip("/") or "")
                payload = endpoint(query, self._json_body(raw_body), *params)
            except RegistryError as exc:
                status, payload = exc.http_status, {"error_code": exc.error_code, "message": exc.message}
                if isinstance(exc, _MethodNotAllowed):
                    extra_headers["Allow"] = ", ".join(exc.allowed)
            except Exception as exc:  # report as Confluent's 50001 rather than dropping the connection
                log.exception("registry request %s %s failed", method, self.path)
                status = 500
                payload = {"error_code": 50001, "message": f"Error in the backend data store: {type(exc).__name__}: {exc}"}
            self._send_json(status, payload, extra_headers)
            return status

        def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has the headers of the GET answer and no body
                self.wfile.write(data)

        def _framing_error(self, message: str, status: int = 400) -> RegistryError:
            """A request whose body cannot be delimited: answer, then close (the rest of the stream is unknowable)."""
            self.close_connection = True
            return RegistryError(message, http_status=status, error_code=status)

        def _read_body(self) -> bytes:
            """The request body, framed by Content-Length or chunked transfer coding (RFC 9112 section 6)."""
            try:
                return self._read_framed_body()
            except TimeoutError as exc:
                raise self._framing_error(f"timed out reading the request body: {exc}", 408) from exc

        def _read_framed_body(self) -> bytes:
            transfer_encoding = self.headers.get_all("Transfer-Encoding")
            lengths = self.headers.get_all("Content-Length")
            if transfer_encoding:
                if lengths:
                    raise self._framing_error("a request may not carry both Transfer-Encoding and Content-Length")
                codings = [c.strip().lower() for value in transfer_encoding for c in value.split(",") if c.strip()]
                if codings != ["chunked"]:
                    raise self._framing_error(
                        f"Transfer-Encoding {', '.join(transfer_encoding)!r} is not supported: send Content-Length "
                        "or Transfer-Encoding: chunked",
                        status=501,
                    )
                return self._read_chunked()
            if not lengths:
                return b""
            values = {v.strip() for value in lengths for v in value.split(",")}
            if len(values) != 1 or not re.fullmatch(r"[0-9]{1,20}", next(iter(values))):
                raise self._framing_error(f"invalid Content-Length {', '.join(lengths)!r}: expected one non-negative integer")
            length = int(values.pop())
            if length > MAX_BODY_BYTES:
                raise self._framing_error(f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes", 413)
            body = self.rfile.read(length)
            if len(body) != length:
                raise self._framing_error(f"request body ended after {len(body)} of {length} bytes (Content-Length)")
            return body

        def _read_chunked(self) -> bytes:
            body = bytearray()
            while True:
                line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                size_text = line.split(b";", 1)[0].strip()
                if len(line) > _MAX_CHUNK_LINE or not line.endswith(b"\n") or not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                    raise self._framing_error(f"malformed chunk size line {line[:80]!r} in a chunked request body")
                size = int(size_text, 16)
                if size == 0:
                    break
                if len(body) + size > MAX_BODY_BYTES:
                    raise self._framing_error(f"chunked request body exceeds the limit of {MAX_BODY_BYTES} bytes", 413)
                chunk = self.rfile.read(size)
                if len(chunk) != size or self.rfile.readline(_MAX_CHUNK_LINE + 1) not in (b"\r\n", b"\n"):
                    raise self._framing_error("a chunk of the chunked request body is truncated or not followed by CRLF")
                body += chunk
            for _ in range(100):  # trailer fields, ignored, up to the empty line
                line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                if line in (b"\r\n", b"\n"):
                    return bytes(body)
                if not line or len(line) > _MAX_CHUNK_LINE:
                    break
            raise self._framing_error("the chunked request body does not end with an empty line after the last chunk")

        # Methods no route takes still get a JSON answer: 405 (with Allow) on a known path, else 404
        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _dispatch

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Errors the standard library raises before routing (bad request line, unknown method, ...) as JSON."""
            self.log_error("code %d, message %s", code, message)
            self.close_connection = True
            short = self.responses.get(code, ("Error",))[0]
            self._send_json(code, {"error_code": code, "message": message or short})

        def _route(self, method: str, path: str) -> tuple[Callable[..., Any], list[str]]:
            allowed: list[str] = []
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(path)
                if match:
                    allowed.append(route_method)
                    if route_method == method:
                        return getattr(api, name), [unquote(g) for g in match.groups()]
            if allowed:
                raise _MethodNotAllowed(method, path, list(dict.fromkeys(allowed)))
            raise RegistryError(f"HTTP 404 Not Found: no endpoint {method} {path}", http_status=404, error_code=404)

        def _json_body(self, raw: bytes) -> Any:
            if not raw:
                return None
            content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
            if content_type not in _ACCEPTED_BODY_TYPES:
                raise RegistryError(
                    f"Unsupported Content-Type {content_type!r}; send {CONTENT_TYPE} or application/json",
                    http_status=415,
                    error_code=415,
                )
            try:
                return json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RegistryError(f"request body is not valid JSON: {exc}", http_status=400, error_code=400) from exc

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
            log.info("%s %s", self.address_string(), format % args)

    return Handler


class RegistryServer:
    """The registry on ``host:port`` backed by PostgreSQL at ``dsn``.

    ``start()`` serves in a background thread (for tests and embedding);
    ``stop()`` shuts it down. Port 0 picks a free port; read ``url`` after ``start()``.
    """

    def __init__(self, host: str, port: int, dsn: str):
        self.host, self.port, self.dsn = host, port, dsn
        self._store: RegistryStore | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("RegistryServer.url is known only after start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "RegistryServer":
        if self._httpd is not None:
            raise RuntimeError("RegistryServer already started")
        self._store = RegistryStore(self.dsn)
        try:
            self._store.create_tables()
            self._httpd = ThreadingHTTPServer((self.host, self.port), _make_handler(_Api(self._store)))
        except BaseException:
            self._store.close()
            self._store = None
            raise
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="schema-registry", daemon=True)
        self._thread.start()
        log.info("schema registry listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(host: str, port: int, dsn: str) -> RegistryServer:
    """Start a registry in a background thread and return it (call ``stop()`` when done)."""
    return RegistryServer(host, port, dsn).start()
