"""The project's PostgreSQL schema (asset registry, command and control, DLQ) and its migration.

Migrations are append-only: a new change is a new entry in ``MIGRATIONS``;
``migrate(dsn)`` applies those not yet recorded in ``schema_migrations``.
"""

from __future__ import annotations

import psycopg

__all__ = ["MIGRATIONS", "migrate", "connect"]

from vpp.migrations import MIGRATIONS  # noqa: E402  (the schema, one entry per change)



def connect(dsn: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(dsn, **kwargs)


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("SELECT pg_advisory_xact_lock(424242)")
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for name, ddl in MIGRATIONS:
            if name in done:
                continue
            conn.execute(ddl)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
        conn.commit()
    return applied
