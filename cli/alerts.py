"""`vpp alerts list|show|ack|silence`: operators' view of the alerts the store-alerts flow keeps."""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from cli.common import command, load_settings, positive_int
from vpp.errors import UserError

__all__ = ["add_commands", "parse_duration"]

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
STATES = ("pending", "firing", "resolved", "dropped")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` (an argparse type); more than 0, at most 365 days."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 90s, 30m, 2h, 1d or 1h30m")
    seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(compact))
    if seconds <= 0 or seconds > 365 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 s and at most 365 days")
    return timedelta(seconds=seconds)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, list):
            value = [_jsonable(v) for v in value]
        out[key] = value
    return out


def _state_text(row: dict[str, Any]) -> str:
    marks = [row["state"]]
    if row["silenced"]:
        marks.append("silenced")
    if row["acked_by"]:
        marks.append(f"acked by {row['acked_by']}")
    return ", ".join(marks)


def cmd_list(args: argparse.Namespace) -> int:
    from sinks.alert_admin import list_alerts

    rows = list_alerts(load_settings(args).postgres_dsn, args.state, node=args.node, limit=args.limit)
    if args.json:
        print(json.dumps([_jsonable(r) for r in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"alerts ({args.state or 'all but dropped'}{', under ' + args.node if args.node else ''})")
    for col in ("id", "rule", "subject", "severity", "state", "since", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["alert_id"], r["rule"], r["subject"], r["severity"], _state_text(r),
                      r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), r["summary"])
    Console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from sinks.alert_admin import AlertNotFound, alert_with_history

    try:
        row = alert_with_history(load_settings(args).postgres_dsn, args.id)
    except AlertNotFound:
        raise UserError(f"no alert with id {args.id!r} (see: vpp alerts list)") from None
    print(json.dumps(_jsonable(row), indent=2))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from sinks.alert_admin import AlertNotFound, ack_alert

    if not args.by.strip():
        raise UserError("--by must name who acknowledges the alert")
    try:
        ack_alert(load_settings(args).postgres_dsn, args.id, args.by.strip())
    except AlertNotFound:
        raise UserError(f"no alert with id {args.id!r} (see: vpp alerts list)") from None
    print(f"alert {args.id} acknowledged by {args.by.strip()}")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    from sinks.alert_admin import AlertNotFound, silence_alert, silence_identity

    dsn = load_settings(args).postgres_dsn
    if args.id is not None:
        if args.rule or args.subject:
            raise UserError("give an alert ID or --rule and --subject, not both")
        until = datetime.now(timezone.utc) + args.duration
        try:
            silence_alert(dsn, args.id, args.by, until)
        except AlertNotFound:
            raise UserError(f"no alert with id {args.id!r} (see: vpp alerts list)") from None
        print(f"alert {args.id} silenced until {until.isoformat()}")
        return 0
    if not (args.rule and args.subject):
        raise UserError("give an alert ID, or both --rule and --subject")
    until, ids = silence_identity(dsn, args.rule, args.subject, args.duration, args.by)
    print(f"{args.rule} {args.subject} silenced until {until.isoformat()} "
          f"({len(ids)} open alert(s); alerts raised meanwhile are silenced too)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("alerts", help="list, show, acknowledge and silence alerts (stored by the store-alerts flow)")
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    ls = command(asub, "list", cmd_list, help="alerts, newest change first (dropped ones only with --state dropped)")
    ls.add_argument("--state", choices=STATES, default=None, help="only alerts in this state")
    ls.add_argument("--node", default=None, help="only alerts on this node of the fleet tree or under it")
    ls.add_argument("--limit", type=positive_int, default=100, help="how many (at least 1; default 100)")
    ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    show = command(asub, "show", cmd_show, help="one alert and its history (transitions, acknowledgements, silences)")
    show.add_argument("id")
    ack = command(asub, "ack", cmd_ack, help="acknowledge an alert")
    ack.add_argument("id")
    ack.add_argument("--by", required=True, help="who acknowledges it")
    sil = command(asub, "silence", cmd_silence, help="silence an alert, or every alert of one rule and subject, for a while")
    sil.add_argument("id", nargs="?", default=None, help="the alert (or give --rule and --subject)")
    sil.add_argument("--rule", default=None, help="with --subject: silence this identity, also alerts raised meanwhile")
    sil.add_argument("--subject", default=None)
    sil.add_argument("--for", dest="duration", type=parse_duration, required=True, help="how long, e.g. 30m, 2h, 1d")
    sil.add_argument("--by", default=None, help="who silences (recorded in the history)")
