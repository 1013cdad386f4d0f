"""`vpp up`, `vpp down`, `vpp status`: the local stack of real services."""

from __future__ import annotations

import argparse
import json

from cli.common import command, load_settings
from vpp.errors import redact_dsn

__all__ = ["add_commands"]


def _stack(args: argparse.Namespace):
    from devtools.stack import Stack

    settings = load_settings(args)
    return Stack(settings.state_dir, partitions=dict(settings.partitions), topic_prefix=settings.topic_prefix)


def cmd_up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    print(f"starting the local stack in {stack.state_dir}")
    status = stack.up()
    _print_status(status)
    return 0 if status.healthy else 1


def cmd_down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    stack.down(purge=args.purge)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _stack(args).status()
    if args.json:
        print(json.dumps(status.to_json(), indent=2, sort_keys=True))
    elif not status.services:
        print("the local stack was never started here (run: vpp up)")
    else:
        _print_status(status)
    return 0 if status.healthy else 1


def _print_status(status) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="local stack")
    for col in ("service", "address", "pid", "health", "detail"):
        table.add_column(col)
    for s in status.services:
        table.add_row(s.name, redact_dsn(s.address), str(s.pid or "-"), "[green]up[/]" if s.healthy else "[red]DOWN[/]", s.detail)
    Console().print(table)


def add_commands(sub) -> None:
    p = command(sub, "up", cmd_up, help="start the local stack (broker, PostgreSQL, time-series store, schema registry)")
    p = command(sub, "down", cmd_down, help="stop the local stack")
    p.add_argument("--purge", action="store_true", help="also delete the state directory (all data)")
    p = command(sub, "status", cmd_status, help="addresses and health of each local service (exit 1 if any is down)")
    p.add_argument("--json", action="store_true", help="one JSON object: broker, schema_registry, postgres, timeseries, api (while vpp serve runs), services")
