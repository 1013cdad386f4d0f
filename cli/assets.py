"""`vpp assets import FILE.csv` and `vpp assets list`: a thin layer over ``sinks.asset_registry``."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from sinks.asset_registry import import_assets_file, list_assets
from vpp.assets import CSV_COLUMNS, format_number

__all__ = ["add_commands"]


def add_commands(subparsers) -> None:
    from cli.common import add_common

    parser = subparsers.add_parser("assets", help="import and list the asset registry")
    sub = parser.add_subparsers(dest="assets_command", metavar="ACTION")
    sub.required = True

    imp = sub.add_parser("import", help="import an asset CSV (all rows or none)")
    imp.add_argument("file", metavar="FILE.csv", help="CSV with header " + ",".join(CSV_COLUMNS))
    add_common(imp)
    imp.set_defaults(func=_cmd_import)

    lst = sub.add_parser("list", help="list registered assets")
    lst.add_argument("--prefix", default=None, metavar="PATH", help="only assets at or below this region path")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_common(lst)
    lst.set_defaults(func=_cmd_list)


def _cmd_import(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    settings = load_settings(args)
    counts = import_assets_file(settings.postgres_dsn, args.file)
    print(
        f"imported {counts.total} asset(s) from {args.file}: "
        f"{counts.inserted} new, {counts.updated} updated, {counts.unchanged} unchanged"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from cli.common import load_settings

    settings = load_settings(args)
    assets = list_assets(settings.postgres_dsn, args.prefix)
    if args.json:
        import orjson

        print(orjson.dumps([asdict(a) for a in assets], option=orjson.OPT_INDENT_2).decode())
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"assets{' under ' + args.prefix if args.prefix else ''} ({len(assets)})")
    for name, justify in (("device_id", "left"), ("region_path", "left"), ("timezone", "left"),
                          ("capacity_wh", "right"), ("max_charge_w", "right"), ("max_discharge_w", "right"),
                          ("reserve_pct", "right"), ("peak shaving", "center")):
        table.add_column(name, justify=justify)
    for a in assets:
        table.add_row(a.device_id, a.region_path, a.timezone, format_number(a.capacity_wh), format_number(a.max_charge_w),
                      format_number(a.max_discharge_w), format_number(a.reserve_pct), "yes" if a.enrolled_peak_shaving else "no")
    Console().print(table)
    return 0
