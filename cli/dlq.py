"""`vpp dlq list|show`: inspect rejected readings stored by the store-dlq flow."""

from __future__ import annotations

import argparse
import base64
import json

from cli.common import command, load_settings, positive_int
from vpp.errors import UserError

__all__ = ["add_commands", "list_dead_letters", "reason_counts"]


def list_dead_letters(dsn: str, *, reason: str | None = None, limit: int = 50) -> list[dict]:
    import psycopg
    from psycopg.rows import dict_row

    query = ("SELECT id, reason, detail, device_id, source_topic, source_partition, source_offset, received_at "
             "FROM telemetry_dlq WHERE (%(reason)s::text IS NULL OR reason = %(reason)s) ORDER BY id DESC LIMIT %(limit)s")
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, {"reason": reason, "limit": limit}).fetchall()


def reason_counts(dsn: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT reason, count(*) FROM telemetry_dlq GROUP BY reason ORDER BY 2 DESC").fetchall())


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = list_dead_letters(load_settings(args).postgres_dsn, reason=args.reason, limit=args.limit)
    table = Table(title=f"dead letters (newest {args.limit})")
    for col in ("id", "reason", "device", "source", "detail"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r["id"]), r["reason"], r["device_id"] or "-",
                      f"{r['source_topic']}[{r['source_partition']}]@{r['source_offset']}", r["detail"][:100])
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(load_settings(args).postgres_dsn, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM telemetry_dlq WHERE id = %s", (args.id,)).fetchone()
    if row is None:
        raise UserError(f"no dead letter with id {args.id} (see: vpp dlq list)")
    raw = bytes(row.pop("raw"))
    row["received_at"] = row["received_at"].isoformat()
    row["raw"] = raw.decode("utf-8", "backslashreplace")  # readable; a byte 0xff and the text \xff look alike here
    row["raw_base64"] = base64.b64encode(raw).decode("ascii")  # exact
    print(json.dumps(row, indent=2))
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("dlq", help="inspect rejected readings (telemetry.dlq stored in PostgreSQL)")
    dsub = p.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    ls = command(dsub, "list", cmd_list, help="newest dead letters")
    ls.add_argument("--reason", default=None, help="only this reason code")
    ls.add_argument("--limit", type=positive_int, default=50, help="how many, newest first (at least 1; default 50)")
    show = command(dsub, "show", cmd_show, help="one dead letter with its original bytes")
    show.add_argument("id", type=int)
