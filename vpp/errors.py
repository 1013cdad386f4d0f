"""Errors the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations

import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["UserError", "unreachable", "service_unreachable", "redact_dsn", "first_line", "postgres_reason"]


class UserError(Exception):
    """Something the user can fix: a missing binary, a bad file, a stopped stack."""


def first_line(text: str) -> str:
    """The first non-blank line of a (possibly multi-line) library message, stripped."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def redact_dsn(dsn: str) -> str:
    """A PostgreSQL DSN fit for an error message: any password replaced by ``***``."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is not None:
            userinfo, _, host = parts.netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
        return dsn
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def unreachable(service: str, address: str, reason: str = "") -> UserError:
    """The one error for a service that does not answer: which one, where, and what to do."""
    why = f" ({reason})" if reason else ""
    return UserError(f"cannot reach {service} at {address}{why}: is the stack up? (vpp up)")


def _loaded(module: str):
    """``module`` if something already imported it (an exception of its types can only come from it), else None."""
    return sys.modules.get(module)


def postgres_reason(exc: BaseException) -> str:
    """The first line of a psycopg error, without psycopg's "connection failed:" prefix and libpq's hints."""
    return first_line(str(exc)).removeprefix("connection failed:").strip().rstrip(":").strip() or type(exc).__name__


def _postgres_connect_failure(exc: BaseException) -> str | None:
    """libpq's reason when ``exc`` is psycopg failing to CONNECT (not a failed query), else None."""
    psycopg = _loaded("psycopg")
    if psycopg is None or type(exc) is not psycopg.OperationalError:  # subclasses carry an SQLSTATE: the server answered
        return None
    text = first_line(str(exc))
    if not (text.startswith(("connection failed:", "connection timeout expired"))
            or re.match(r"connection to server .* failed", text)):
        return None
    return postgres_reason(exc)


def _http_connect_failure(exc: BaseException) -> tuple[str, str] | None:
    """``(url, reason)`` when ``exc`` is httpx (or httpx2, which confluent-kafka's registry client uses) failing to connect."""
    for name in ("httpx2", "httpx"):
        httpx = _loaded(name)
        if httpx is not None and isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            try:
                url = str(exc.request.url)
            except RuntimeError:  # raised without a request attached
                url = ""
            return url, first_line(str(exc)) or type(exc).__name__
    return None


def _broker_connect_failure(exc: BaseException) -> str | None:
    """librdkafka's reason when ``exc`` is a Kafka client that could not reach any broker, else None."""
    kafka = _loaded("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException) or not exc.args:
        return None
    err = exc.args[0]
    if not isinstance(err, kafka.KafkaError):
        return None
    codes = (kafka.KafkaError._TRANSPORT, kafka.KafkaError._ALL_BROKERS_DOWN, kafka.KafkaError._RESOLVE)
    if err.code() in codes or (err.code() == kafka.KafkaError._TIMED_OUT and "metadata" in err.str().lower()):
        return err.str()
    return None


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return bool(a.hostname) and (a.hostname, a.port) == (b.hostname, b.port)


def service_unreachable(exc: BaseException, settings: Any | None) -> UserError | None:
    """A one-line ``UserError`` when ``exc`` (or what it was raised ``from``) is a failure to reach one of the services
    (PostgreSQL, the broker, the schema registry or another HTTP service); ``None`` for anything else, which the
    caller must let through. ``settings`` (may be None) names the configured addresses."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        reason = _postgres_connect_failure(exc)
        if reason is not None:
            address = redact_dsn(settings.postgres_dsn) if settings is not None else "the configured DSN"
            return unreachable("PostgreSQL", address, reason)
        reason = _broker_connect_failure(exc)
        if reason is not None:
            return unreachable("the broker", settings.broker if settings is not None else "the configured address", reason)
        found = _http_connect_failure(exc)
        if found is not None:
            url, reason = found
            service, address = "an HTTP service", url or "its configured URL"
            for label, attr in (("the schema registry", "schema_registry_url"), ("the market", "market_url"),
                                ("the time-series store", "timeseries_url")):
                base = getattr(settings, attr, "") if settings is not None else ""
                if base and url and _same_origin(url, base):
                    service, address = label, base
                    break
            return unreachable(service, redact_dsn(address), reason)  # a URL may carry user:password
        exc = exc.__cause__
    return None
