"""The local PostgreSQL's locks: password (SCRAM) authentication, one role per component, secrets in files.

The stack keeps one libpq password file, ``<state_dir>/secrets/pgpass`` (0600), with a generated password
for the superuser ``postgres`` (migrations and the local tools), ``vpp_flow`` (the flows: rows, never DDL)
and ``vpp_registry`` (the schema registry's own tables). A DSN names that file (``passfile=``) and
holds no password, so printing one shows nothing secret. The roles and their grants are migration
``090_roles`` (vpp/db.py); this module gives them LOGIN and their passwords, hashed here, so no
plain-text password ever reaches the server's statement log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from psycopg import sql

__all__ = ["ROLES", "SUPERUSER", "passwords", "superuser_password_file", "dsn", "HBA", "prepare", "set_passwords"]

SUPERUSER = "postgres"
#: Roles that log in, beside the superuser (created without LOGIN by migration 090_roles).
ROLES = ("vpp_flow", "vpp_registry")

#: Who may connect, and how: everyone by password (SCRAM), over the socket and loopback only.
HBA = """# written by the vpp local stack: every connection authenticates with a SCRAM password
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


def _passfile(state_dir: Path) -> Path:
    return state_dir / "secrets" / "pgpass"


def passwords(state_dir: Path) -> dict[str, str]:
    """Each role's password, generated once into the state dir's password file (0600) and read from it after."""
    path = _passfile(state_dir)
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            *_, user, password = line.split(":")
            known[user] = password
    missing = [r for r in (SUPERUSER, *ROLES) if r not in known]
    if missing:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path.parent, 0o700)
        known.update({role: secrets.token_urlsafe(24) for role in missing})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"*:*:*:{user}:{password}\n" for user, password in known.items())
    return known


def superuser_password_file(state_dir: Path, directory: Path, readable_by: str | None) -> Path:
    """The superuser's password alone in ``directory`` (0600), for ``initdb --pwfile`` (run as ``readable_by``)."""
    password = passwords(state_dir)[SUPERUSER]
    path = directory / "superuser.pw"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    if readable_by:
        import shutil

        shutil.chown(path, user=readable_by)
    return path


def dsn(state_dir: Path, port: int, user: str = SUPERUSER, database: str = "vpp") -> str:
    """A DSN for ``user`` that reads its password from the state dir's password file: it holds no secret."""
    return f"postgresql://{user}@127.0.0.1:{port}/{database}?passfile={_passfile(state_dir)}"


def prepare(state_dir: Path, port: int, data: Path) -> dict[str, str]:
    """On a started server: database ``vpp``, migrations (they create the roles), passwords, then SCRAM for every
    connection (a cluster made before, with trust, gets them here too). Returns the stack's DSN entries."""
    import psycopg

    from vpp.db import migrate

    with psycopg.connect(dsn(state_dir, port, database="postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'vpp'").fetchone():
            conn.execute("CREATE DATABASE vpp")
    owner = dsn(state_dir, port)
    migrate(owner)
    with psycopg.connect(owner, autocommit=True) as conn:
        set_passwords(conn, state_dir)
        (data / "pg_hba.conf").write_text(HBA)
        conn.execute("SELECT pg_reload_conf()")
    return {"postgres": owner, **{f"postgres_{role.removeprefix('vpp_')}": dsn(state_dir, port, role) for role in ROLES}}


def set_passwords(conn, state_dir: Path) -> None:
    """Give the superuser its password and each role LOGIN with its own (sent as SCRAM verifiers, not text)."""
    known = passwords(state_dir)
    for role in (SUPERUSER, *ROLES):
        verifier = conn.pgconn.encrypt_password(known[role].encode(), role.encode(), b"scram-sha-256").decode()
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
