"""`vpp migrate`: apply the PostgreSQL migrations (vpp/db.py) as the database owner.

Run at deploy time (deploy/base/migrate-job.yaml) with the owner's DSN; the flows and the registry then
run as their own roles (migration 090_roles), which cannot change the schema. ``vpp up`` does the same
for the local stack.
"""

from __future__ import annotations

import argparse

from cli.common import command, load_settings
from vpp.errors import redact_dsn

__all__ = ["add_commands"]


def _cmd_migrate(args: argparse.Namespace) -> int:
    from vpp.db import migrate

    settings = load_settings(args)
    applied = migrate(settings.postgres_dsn)
    where = redact_dsn(settings.postgres_dsn)
    print(f"applied {len(applied)} migration(s) to {where}: {', '.join(applied)}" if applied
          else f"{where} is up to date")
    return 0


def add_commands(subparsers) -> None:
    command(subparsers, "migrate", _cmd_migrate, help="apply the PostgreSQL migrations as the database owner (deploy time)")
