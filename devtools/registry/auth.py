"""Who may use the schema registry: HTTP basic auth with read-only and read-write identities.

Reads (GET/HEAD, a schema lookup ``POST /subjects/{subject}``, compatibility checks ``POST
/compatibility/...``) need a read-only or a read-write identity; writes (registering a schema,
changing a compatibility level, deleting) need a read-write one. ``GET /`` answers anyone: it
says nothing but "up" (probes, ``vpp status``). Refusals are Confluent's: 401 with error code
40101 and ``WWW-Authenticate`` when credentials are missing or wrong, 403 with 40301 when the
identity may only read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

__all__ = ["READ", "WRITE", "Identity", "BasicAuth", "identities_from_settings", "is_write"]

READ, WRITE = "read", "write"
_READ_POSTS = (re.compile(r"^/subjects/[^/]+/?$"), re.compile(r"^/compatibility/"))


@dataclass(frozen=True)
class Identity:
    user: str
    password: str
    role: str  # READ or WRITE

    def __repr__(self) -> str:  # never the password
        return f"Identity({self.user!r}, role={self.role!r})"


def identities_from_settings(settings: Any) -> dict[str, Identity]:
    """The registry's identities from the settings: the read-only and the read-write one that have a password."""
    found = {}
    for user, password, role in ((settings.schema_registry_user, settings.schema_registry_password, READ),
                                 (settings.schema_registry_admin_user, settings.schema_registry_admin_password, WRITE)):
        if password:
            found[user] = Identity(user, password, role)
    return found


def is_write(method: str, path: str) -> bool:
    """Whether a request changes the registry (needs a read-write identity)."""
    if method in ("GET", "HEAD"):
        return False
    if method == "POST":
        return not any(p.match(path) for p in _READ_POSTS)
    return True


def _credentials(headers: Mapping[bytes, bytes]) -> tuple[str, str] | None:
    value = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class BasicAuth:
    """ASGI middleware enforcing ``identities`` (user -> Identity); ``error(status, code, message)`` renders refusals."""

    def __init__(self, app: Any, *, identities: Mapping[str, Identity], error: Callable[[int, int, str], Response]):
        if not identities:
            raise ValueError("BasicAuth needs at least one identity")
        self.app, self.identities, self.error = app, dict(identities), error

    def _identity(self, headers: Mapping[bytes, bytes]) -> Identity | None:
        given = _credentials(headers)
        if given is None:
            return None
        known = self.identities.get(given[0])
        # compare even for an unknown user, so the time taken does not tell which users exist
        expected = known.password if known else "\0" * len(given[1])
        return known if hmac.compare_digest(given[1].encode(), expected.encode()) and known else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or (scope["method"] in ("GET", "HEAD") and scope["path"] in ("/", "/ready")):
            await self.app(scope, receive, send)
            return
        identity = self._identity(dict(scope["headers"]))
        if identity is None:
            response = self.error(401, 40101, "Unauthorized: this registry needs HTTP basic auth with a registry "
                                              "identity (read-only to read, read-write to change it)")
            response.headers["WWW-Authenticate"] = 'Basic realm="schema-registry"'
        elif identity.role != WRITE and is_write(scope["method"], scope["path"]):
            response = self.error(403, 40301, f"Forbidden: user {identity.user!r} may only read; "
                                              f"{scope['method']} {scope['path']} needs a read-write identity")
        else:
            scope.setdefault("state", {})["identity"] = identity.user
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
