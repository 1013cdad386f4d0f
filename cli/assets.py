"""`vpp assets add | update | move | enroll | unenroll | commission | activate | suspend | decommission | history |
import | list | export`: a thin layer over ``sinks.asset_operations``, ``sinks.asset_registry`` and
``sinks.asset_history``. Every change is a version (who: ``--by``, default $USER; why: ``--reason``; since when:
``--at``, default now), a row of the audit log, and its events on ``fleet.events``."""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone

from sinks.asset_history import assets_at, history, list_assets, parse_time
from sinks.asset_operations import apply_operation
from sinks.asset_registry import import_assets_file
from vpp.assets import CSV_COLUMNS, assets_to_csv, format_number

__all__ = ["add_commands"]

_RATING_OPTIONS = (("--timezone", str), ("--capacity-wh", float), ("--max-charge-w", float),
                   ("--max-discharge-w", float), ("--reserve-pct", float))


def add_commands(subparsers) -> None:
    from cli.common import add_common

    parser = subparsers.add_parser("assets", help="the asset registry: devices, their lifecycle, programs and history")
    sub = parser.add_subparsers(dest="assets_command", metavar="ACTION")
    sub.required = True

    def change(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("device_id", metavar="DEVICE")
        p.add_argument("--by", default=None, metavar="NAME", help="who makes the change (default $USER)")
        p.add_argument("--reason", default="", help="why (kept in the device's history)")
        p.add_argument("--at", default=None, metavar="TIME", help="when it took effect (ISO-8601; default now)")
        add_common(p)
        p.set_defaults(func=_cmd_change, operation=name)
        return p

    add = change("add", "register a new device (status registered unless --status)")
    add.add_argument("--site", dest="site_id", required=True)
    add.add_argument("--region-path", required=True, help="root to site, e.g. us/ca/pge/94110/site-0042")
    for flag, kind in _RATING_OPTIONS:
        add.add_argument(flag, type=kind, required=True)
    add.add_argument("--status", choices=("registered", "commissioned", "active"), default="registered")
    add.add_argument("--replaces", default=None, metavar="DEVICE", help="the device this one replaces on its site")
    upd = change("update", "change a device's ratings, time zone or lifecycle status")
    for flag, kind in _RATING_OPTIONS:
        upd.add_argument(flag, type=kind, default=None)
    upd.add_argument("--status", default=None, help="registered|commissioned|active|suspended")
    mv = change("move", "move a device to another site (region path ending with the site id)")
    mv.add_argument("region_path", metavar="REGION_PATH")
    en = change("enroll", "enroll a device in a program (peak_shaving, market)")
    en.add_argument("program", metavar="PROGRAM")
    en.add_argument("--reserve-pct", type=float, default=0.0, help="capacity the program keeps back (default 0)")
    en.add_argument("--from", dest="from_time", default=None, metavar="TIME", help="start (default now)")
    en.add_argument("--until", dest="until_time", default=None, metavar="TIME", help="end (default open)")
    un = change("unenroll", "end a device's enrollment in a program (now, or --at)")
    un.add_argument("program", metavar="PROGRAM")
    change("commission", "registered -> commissioned (certificate issued, first connection)")
    change("activate", "commissioned or suspended -> active (dispatchable)")
    change("suspend", "active -> suspended (still measured, never dispatched)")
    change("decommission", "retire a device: out of the tree and every pool at once, certificates revoked")

    hist = sub.add_parser("history", help="the versions of a device (and of the devices it replaced or that replaced it)")
    hist.add_argument("device_id", metavar="DEVICE")
    hist.add_argument("--json", action="store_true")
    add_common(hist)
    hist.set_defaults(func=_cmd_history)

    imp = sub.add_parser("import", help="import an asset CSV (all rows or none)")
    imp.add_argument("file", metavar="FILE.csv", help="CSV with header " + ",".join(CSV_COLUMNS))
    imp.add_argument("--by", default=None, metavar="NAME")
    imp.add_argument("--reason", default="")
    imp.add_argument("--no-events", action="store_true", help="do not publish device_registered/moved events")
    add_common(imp)
    imp.set_defaults(func=_cmd_import)

    lst = sub.add_parser("list", help="list registered assets")
    lst.add_argument("--prefix", default=None, metavar="PATH", help="only assets at or below this region path")
    lst.add_argument("--all", action="store_true", help="decommissioned devices too")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_common(lst)
    lst.set_defaults(func=_cmd_list)

    exp = sub.add_parser("export", help="write the registry as it was at a time (the import CSV), or every version")
    when = exp.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", default=None, metavar="TIME", help="ISO-8601 time, or 'now'")
    when.add_argument("--history", action="store_true", help="every version with valid_from/valid_to (for replay)")
    exp.add_argument("--out", default="-", metavar="FILE", help="output file (default: standard output)")
    add_common(exp)
    exp.set_defaults(func=_cmd_export)


def _ms(text: str | None) -> int | None:
    return None if text is None else int(parse_time(text).timestamp() * 1000)


def _cmd_change(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    settings = load_settings(args)
    params = {k: v for k, v in vars(args).items() if k in (
        "site_id", "region_path", "timezone", "capacity_wh", "max_charge_w", "max_discharge_w", "reserve_pct", "status",
        "replaces", "program")}
    params["from_ms"], params["to_ms"] = _ms(getattr(args, "from_time", None)), _ms(getattr(args, "until_time", None))
    result = apply_operation(settings, args.operation, args.device_id, params,
                             changed_by=args.by or os.environ.get("USER") or "cli", reason=args.reason,
                             at_ms=_ms(args.at))
    after = result.after[args.device_id]
    if not result.changed:
        print(f"{args.device_id}: nothing changed")
        return 0
    print(f"{args.device_id}: {args.operation} recorded ({after.status}, {after.node_path}); "
          f"events: {', '.join(e['kind'] for e in result.events) or 'none'}"
          + (f"; certificates revoked: {', '.join(result.revoked)}" if result.revoked else ""))
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from cli.common import load_settings
    from vpp.errors import UserError

    rows = history(load_settings(args).postgres_dsn, args.device_id)
    if not rows:
        raise UserError(f"device {args.device_id!r} was never registered")
    if args.json:
        import orjson

        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC, default=str).decode())
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"history of {args.device_id} ({len(rows)} versions)")
    for name in ("device", "v", "valid_from", "valid_to", "status", "region_path", "programs", "by", "reason"):
        table.add_column(name)
    for r in rows:
        programs = "; ".join(_enrollment_text(p) for p in r["programs"])
        device = r["device_id"] + (f" (replaces {r['replaces']})" if r["replaces"] else "")
        table.add_row(device, str(r["version"]), _iso(r["valid_from"]), _iso(r["valid_to"]) or "current",
                      r["status"], r["region_path"], programs, r["changed_by"], r["reason"])
    Console(width=200).print(table)
    return 0


def _enrollment_text(p: dict) -> str:
    """``peak_shaving:20 from 2026-12-07T18:00 until ...``: a program, its reserve and its dates (UTC)."""
    def when(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M")

    text = p["program"] + (f":{p['reserve_pct']:g}" if p.get("reserve_pct") else "")
    if p.get("from_ms") is not None:
        text += f" from {when(p['from_ms'])}"
    if p.get("to_ms") is not None:
        text += f" until {when(p['to_ms'])}"
    return text


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.isoformat(timespec="seconds")


def _cmd_import(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    settings = load_settings(args)
    counts = import_assets_file(settings.postgres_dsn, args.file, changed_by=args.by, reason=args.reason)
    print(
        f"imported {counts.total} asset(s) from {args.file}: "
        f"{counts.inserted} new, {counts.updated} updated, {counts.unchanged} unchanged"
    )
    if counts.events and not args.no_events:
        from sinks.fleet_events import publish_events
        from vpp.errors import UserError

        try:
            publish_events(settings, counts.events, timeout_s=60.0)
        except UserError as exc:
            raise UserError(f"the import is recorded, but its events were not published: {exc}") from None
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    settings = load_settings(args)
    assets = list_assets(settings.postgres_dsn, args.prefix, include_decommissioned=args.all)
    if args.json:
        import orjson

        print(orjson.dumps([_jsonable(a) for a in assets], option=orjson.OPT_INDENT_2).decode())
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"assets{' under ' + args.prefix if args.prefix else ''} ({len(assets)})")
    for name, justify in (("device_id", "left"), ("region_path", "left"), ("status", "left"), ("timezone", "left"),
                          ("capacity_wh", "right"), ("max_charge_w", "right"), ("max_discharge_w", "right"),
                          ("reserve_pct", "right"), ("programs", "left")):
        table.add_column(name, justify=justify)
    import time

    from vpp.asset_lifecycle import current, programs_cell

    now_ms = int(time.time() * 1000)
    for a in assets:
        table.add_row(a.device_id, a.region_path, a.status, a.timezone, format_number(a.capacity_wh),
                      format_number(a.max_charge_w), format_number(a.max_discharge_w), format_number(a.reserve_pct),
                      programs_cell(current(a.enrollments, now_ms)))
    Console().print(table)
    return 0


def _jsonable(a) -> dict:
    from vpp.asset_lifecycle import enrollments_to_json

    out = {name: getattr(a, name) for name in a.__slots__ if name != "programs"}
    out["programs"] = enrollments_to_json(a.enrollments)
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    dsn = load_settings(args).postgres_dsn
    if args.history:
        from sinks.asset_history import versions
        from vpp.asset_versions_csv import versions_to_csv

        text = versions_to_csv(versions(dsn))
    else:
        from dataclasses import replace

        from vpp.asset_lifecycle import current

        at = datetime.now().astimezone() if args.at == "now" else parse_time(args.at)
        at_ms = int(at.timestamp() * 1000)
        text = assets_to_csv(replace(a, programs=current(a.enrollments, at_ms)) for a in assets_at(dsn, at))
    if args.out == "-":
        print(text, end="")
    else:
        from pathlib import Path

        Path(args.out).write_text(text, encoding="utf-8")
    return 0
