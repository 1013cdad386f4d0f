"""`vpp dispatch send|show`: issue a dispatch command to a node, and see what became of it.

``send`` produces one Avro ``DispatchCommand`` to ``dispatch.commands`` (keyed by node path,
schema id from the registry) and waits for its delivery; the dispatch flow does the rest.
``show`` reads the command-and-control store the dispatch flow writes (PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

from cli.common import command, load_settings
from sinks.dispatch_commands import send_command
from vpp import commands
from vpp.errors import UserError

__all__ = ["add_commands", "command_record", "send_command"]


def command_record(node_path: str, target_w: float, minutes: float, **kwargs) -> dict[str, Any]:
    """``vpp.commands.command_record``, its refusals naming the command line's arguments."""
    try:
        return commands.command_record(node_path, target_w, minutes, **kwargs)
    except commands.InvalidCommand as exc:
        if exc.field == "node_path":
            raise UserError(f"NODE_PATH: {exc.reason}") from None
        raise UserError(f"{_OPTION[exc.field]} {exc.reason}") from None


_OPTION = {"target_w": "--watts", "minutes": "--minutes"}


def _cmd_send(args: argparse.Namespace) -> int:
    from cli.simulate import parse_start

    settings = load_settings(args)
    start_ms = parse_start(args.start) if args.start else int(time.time() * 1000)
    record = command_record(args.node_path, args.watts, args.minutes, start_ms=start_ms, issued_by=args.issued_by,
                            command_id=args.command_id, program=args.program)
    send_command(settings, record)
    print(json.dumps(record))
    print(f"sent to {settings.topic('dispatch.commands')}; the dispatch flow accepts or rejects it: "
          f"vpp dispatch show {record['command_id']}", file=sys.stderr)
    if not _node_has_devices(settings.postgres_dsn, record["node_path"]):
        print(f"warning: no registered device lies under {record['node_path']!r} now: unless one is registered "
              "before the flow reads it, the dispatch flow rejects it", file=sys.stderr)
    return 0


def _node_has_devices(dsn: str, node_path: str) -> bool:
    """Whether the asset registry holds a device under the node (True when it cannot be read: no false alarm)."""
    import psycopg

    from sinks.asset_registry import list_assets

    try:
        return bool(list_assets(dsn, prefix=node_path))  # the node's devices: its subtree, or the device itself
    except psycopg.Error:
        return True


def _iso(value: Any) -> Any:
    return value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else value


def _cmd_show(args: argparse.Namespace) -> int:
    import psycopg

    from sinks.command_control import show_command

    settings = load_settings(args)
    try:
        found = show_command(settings.postgres_dsn, args.command_id)
    except psycopg.errors.UndefinedTable:
        raise UserError("the command-and-control tables do not exist yet: run the dispatch flow (vpp run dispatch)") from None
    except psycopg.OperationalError as exc:
        raise UserError(f"cannot connect to PostgreSQL ({str(exc).strip().splitlines()[0]}); is the stack running (vpp up)?") from exc
    if found is None:
        raise UserError(f"no dispatch command {args.command_id!r} in the store (is the dispatch flow running?)")
    if args.json:
        print(json.dumps({k: ([{c: _iso(v) for c, v in r.items()} for r in rows] if isinstance(rows, list)
                              else {c: _iso(v) for c, v in rows.items()} if isinstance(rows, dict) else rows)
                          for k, rows in found.items()}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    c = found["command"]
    console = Console()
    console.print(f"[bold]{c['command_id']}[/] node {c['node_path']} target {c['target_w']:.0f} W "
                  f"from {_iso(c['start_at']) or '(no representable time: see the status)'} "
                  f"to {_iso(c['end_at']) or '(no representable time: see the status)'} issued by {c['issued_by']}")
    table = Table(title="statuses")
    for col in ("at", "state", "requested W", "allocated W", "shortfall W", "devices", "reason"):
        table.add_column(col, overflow="fold")
    for s in found["statuses"]:
        table.add_row(_iso(s["at"]), s["state"], f"{s['requested_w']:.0f}", f"{s['allocated_w']:.1f}",
                      f"{s['shortfall_w']:.1f}", str(s["devices"]), s["reason"] or "")
    console.print(table)
    points = found["latest_setpoints"]
    console.print(f"{len(points)} devices, {found['setpoint_rows']} set points stored, "
                  f"{found['devices_applied']} applied by their device (acks through the gateway); latest per device:")
    for p in points[: args.limit]:
        ack = p["ack_status"] or "no ack"
        console.print(f"  {p['device_id']:<16} {p['setpoint_w']:>10.1f} W  from {_iso(p['start_at'])}  {ack} {p['ack_reason'] or ''}")
    if len(points) > args.limit:
        console.print(f"  ... and {len(points) - args.limit} more (--limit)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("dispatch", help="send a dispatch command to a node of the fleet, or show one")
    actions = p.add_subparsers(dest="dispatch_command", metavar="ACTION")
    actions.required = True
    s = command(actions, "send", _cmd_send, help="send a command to dispatch.commands")
    s.add_argument("node_path", metavar="NODE_PATH", help="node of the fleet tree, e.g. us/ca/pge")
    s.add_argument("--watts", type=float, required=True, help="target power, W: > 0 discharge, < 0 charge")
    s.add_argument("--minutes", type=float, required=True, help="how long, from the start")
    s.add_argument("--start", default=None, metavar="ISO", help="start (ISO-8601 or epoch ms; default now)")
    s.add_argument("--command-id", default=None, help="command id (default a new random one)")
    s.add_argument("--issued-by", default="operator", help="who issues it (default operator)")
    s.add_argument("--program", default=None, help="only devices enrolled in this program (peak_shaving)")
    sh = command(actions, "show", _cmd_show, help="a command's statuses and set points from the command-and-control store")
    sh.add_argument("command_id", metavar="COMMAND_ID")
    sh.add_argument("--json", action="store_true", help="print JSON")
    sh.add_argument("--limit", type=int, default=20, help="devices to list (default 20)")
