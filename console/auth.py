"""Who may do what: roles, tokens, login rate limits and signed session cookies (pure: no I/O, no clock).

Roles are ordered ``viewer`` < ``operator`` < ``admin``: a viewer reads everything, an operator also
dispatches and acks or silences alerts, an admin also manages users and tokens and reads the audit log.
A token is 32 random bytes (URL-safe text, prefixed ``vpp_``); only its SHA-256 is stored, so a stolen
database holds no usable token. A session cookie carries a token signed with HMAC-SHA256 under a key
that never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["ROLES", "role_at_least", "check_role", "new_token", "token_sha256", "sign", "unsign",
           "RateLimit", "login_refusal", "valid_user_name", "password_problem", "Principal", "expired"]

ROLES = ("viewer", "operator", "admin")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    """An authenticated user as a request sees it."""

    name: str
    role: str
    token_id: int
    via: str  # "bearer" or "cookie"


def valid_user_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


def password_problem(password: str) -> str | None:
    """None for a usable password, else what is wrong with it."""
    if len(password) < 8:
        return "the password must be at least 8 characters"
    if len(password) > 1024:
        return "the password must be at most 1024 characters"
    return None


def role_at_least(role: str, needed: str) -> bool:
    """Whether ``role`` includes ``needed`` (an unknown role includes nothing)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


def check_role(role: str, needed: str) -> str | None:
    """None when allowed, else the reason a 403 names."""
    if role_at_least(role, needed):
        return None
    return f"role {role!r} may not do this: it needs {needed!r} or above"


def new_token() -> tuple[str, str]:
    """A fresh token and its SHA-256 hex digest (the only part stored)."""
    token = "vpp_" + secrets.token_urlsafe(32)
    return token, token_sha256(token)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def sign(value: str, key: bytes) -> str:
    """``value.MAC`` with an HMAC-SHA256 over the value (URL-safe, no padding)."""
    mac = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return value + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def unsign(signed: str, key: bytes) -> str | None:
    """The value of a ``sign`` output when its MAC holds under ``key``, else None."""
    value, _, mac = (signed or "").rpartition(".")
    if not value or not mac:
        return None
    expected = sign(value, key).rpartition(".")[2]
    return value if hmac.compare_digest(expected, mac) else None


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_user`` failed logins per user name and ``per_address`` per client address in ``window``."""

    per_user: int = 5
    per_address: int = 20
    window: timedelta = timedelta(minutes=15)


def login_refusal(user_failures: int, address_failures: int, limit: RateLimit) -> str | None:
    """None when a login attempt may be tried now, else why it is refused (HTTP 429)."""
    minutes = int(limit.window.total_seconds() // 60)
    if user_failures >= limit.per_user:
        return f"too many failed logins for this user ({user_failures} in {minutes} min): try again later"
    if address_failures >= limit.per_address:
        return f"too many failed logins from this address ({address_failures} in {minutes} min): try again later"
    return None


def expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now
