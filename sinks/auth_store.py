"""Users, API tokens, login attempts and the audit log in PostgreSQL (tables of migration ``080_operator``).

Passwords are Argon2id hashes (``argon2-cffi``'s defaults); tokens arrive here as SHA-256 digests only
(``console.auth.new_token`` makes them), so no token is ever stored. The audit log only grows: a
trigger refuses UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = ["AuthStore", "AuthError", "TokenInfo"]

# a valid hash to verify against when the user is unknown, so both cases take the same time
_DUMMY_HASH = None


class AuthError(Exception):
    """A request the store refuses (unknown user, bad role, duplicate name); the message says why."""


@dataclass(frozen=True)
class TokenInfo:
    token_id: int
    user_name: str
    role: str
    kind: str
    expires_at: datetime | None


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id, RFC 9106 low-memory profile


class AuthStore:
    """Thin I/O over the auth tables. Every API request looks its token up here, so each thread keeps one
    connection (autocommit) instead of opening one per call; a broken one is dropped and reopened next time."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._local = threading.local()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._local.conn = psycopg.connect(self.dsn, row_factory=dict_row, autocommit=True)
        try:
            yield conn
        except psycopg.OperationalError:
            conn.close()
            self._local.conn = None
            raise

    def close(self) -> None:
        """Close this thread's connection (others close with their threads' end of life, or the process)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- users ------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str) -> None:
        with self._conn() as conn:
            try:
                conn.execute("INSERT INTO users (name, role, password_hash) VALUES (%s, %s, %s)",
                             (name, role, _hasher().hash(password)))
            except psycopg.errors.UniqueViolation:
                raise AuthError(f"user {name!r} exists already") from None
            except psycopg.errors.CheckViolation:
                raise AuthError(f"user name {name!r} (1 to 64 letters, digits or . _ @ -) or role {role!r} "
                                "(viewer, operator, admin) refused") from None

    def list_users(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return conn.execute("SELECT name, role, disabled, created_at FROM users ORDER BY name").fetchall()

    def disable_user(self, name: str) -> None:
        """Disable a user and revoke every token they hold."""
        with self._conn() as conn, conn.transaction():
            if conn.execute("UPDATE users SET disabled = true WHERE name = %s", (name,)).rowcount == 0:
                raise AuthError(f"no user {name!r}")
            conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE user_name = %s AND revoked_at IS NULL", (name,))

    # -- login ------------------------------------------------------------------------------
    def login_failures(self, name: str, address: str, window: timedelta) -> tuple[int, int]:
        """Failed logins in the last ``window``: ``(for this user name, from this address)``."""
        since = datetime.now(timezone.utc) - window
        with self._conn() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE user_name = %s) AS u, count(*) FILTER (WHERE address = %s) AS a "
                "FROM login_attempts WHERE NOT ok AND at > %s AND (user_name = %s OR address = %s)",
                (name, address, since, name, address)).fetchone()
        return row["u"], row["a"]

    def check_password(self, name: str, password: str, address: str) -> dict[str, Any] | None:
        """The user (name, role) when the password is right and the user enabled, else None; records the attempt."""
        from argon2.exceptions import InvalidHashError, VerificationError

        global _DUMMY_HASH
        with self._conn() as conn:
            user = conn.execute("SELECT name, role, password_hash, disabled FROM users WHERE name = %s", (name,)).fetchone()
            hasher = _hasher()
            ok = False
            if user is None:
                _DUMMY_HASH = _DUMMY_HASH or hasher.hash("not a password")
                try:
                    hasher.verify(_DUMMY_HASH, password)
                except VerificationError:
                    pass
            else:
                try:
                    ok = hasher.verify(user["password_hash"], password) and not user["disabled"]
                except (VerificationError, InvalidHashError):
                    ok = False
            conn.execute("INSERT INTO login_attempts (user_name, address, ok) VALUES (%s, %s, %s)",
                         (name[:200], address, ok))
            conn.execute("DELETE FROM login_attempts WHERE at < now() - interval '1 day'")  # far beyond any limit window
        return {"name": user["name"], "role": user["role"]} if ok else None

    # -- tokens -----------------------------------------------------------------------------
    def create_token(self, name: str, digest: str, *, kind: str = "api",
                     expires_in: timedelta | None = None) -> tuple[int, datetime | None]:
        """Store a token's digest for a user: ``(token_id, expires_at)``."""
        expires_at = datetime.now(timezone.utc) + expires_in if expires_in is not None else None
        with self._conn() as conn:
            user = conn.execute("SELECT disabled FROM users WHERE name = %s", (name,)).fetchone()
            if user is None:
                raise AuthError(f"no user {name!r}")
            if user["disabled"]:
                raise AuthError(f"user {name!r} is disabled")
            row = conn.execute("INSERT INTO api_tokens (user_name, kind, token_sha256, expires_at) VALUES (%s, %s, %s, %s) "
                               "RETURNING token_id", (name, kind, digest, expires_at)).fetchone()
            # logins and sessions expire by the thousand: forget them a day after (API tokens stay listed)
            conn.execute("DELETE FROM api_tokens WHERE kind <> 'api' AND expires_at < now() - interval '1 day'")
        return row["token_id"], expires_at

    def revoke_token(self, token_id: int) -> None:
        with self._conn() as conn:
            if conn.execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = %s",
                            (token_id,)).rowcount == 0:
                raise AuthError(f"no token {token_id}")

    def revoke_digest(self, digest: str) -> None:
        with self._conn() as conn:
            conn.execute("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_sha256 = %s",
                         (digest,))

    def lookup_token(self, digest: str) -> TokenInfo | None:
        """The live token's user and role; None when unknown, revoked, expired or its user disabled."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT t.token_id, t.user_name, u.role, t.kind, t.expires_at FROM api_tokens t "
                "JOIN users u ON u.name = t.user_name WHERE t.token_sha256 = %s AND t.revoked_at IS NULL "
                "AND NOT u.disabled AND (t.expires_at IS NULL OR t.expires_at > now())", (digest,)).fetchone()
        return None if row is None else TokenInfo(**row)

    def list_tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT token_id, user_name, kind, created_at, expires_at, revoked_at FROM api_tokens"
        with self._conn() as conn:
            if name:
                return conn.execute(query + " WHERE user_name = %s ORDER BY token_id", (name,)).fetchall()
            return conn.execute(query + " ORDER BY token_id").fetchall()

    # -- audit ------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, *, target: str | None, address: str, outcome: str,
              detail: dict[str, Any] | None = None) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO audit_log (actor, action, target, address, outcome, detail) VALUES (%s, %s, %s, %s, %s, %s)",
                         (actor, action, target, address, outcome, Jsonb(detail or {})))

    def read_audit(self, *, limit: int = 100, actor: str | None = None) -> list[dict[str, Any]]:
        with self._conn() as conn:
            if actor:
                return conn.execute("SELECT * FROM audit_log WHERE actor = %s ORDER BY id DESC LIMIT %s", (actor, limit)).fetchall()
            return conn.execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT %s", (limit,)).fetchall()
