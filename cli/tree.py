"""`vpp tree [PATH] [--depth N]`: the live fleet tree from PostgreSQL ``node_state`` (flow store-aggregates).

One line per node, indented under its parent: power (battery, solar, load,
grid), energy available, SoC, and devices known / reporting / estimated, from
the node's latest closed window. ``--depth N`` shows N levels below PATH (or
below the roots); nodes whose devices all went stale (``devices_known = 0``)
are hidden unless ``--all``.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from cli.common import command, load_settings
from vpp.errors import UserError, postgres_reason, redact_dsn, unreachable

__all__ = ["add_commands", "tree_rows", "render_tree"]

_COLUMNS = ("node", "window end", "known", "reporting", "estimated", "battery kW", "solar kW", "load kW", "grid kW",
            "energy avail kWh", "SoC %", "discharge kW", "charge kW")


def _kilo(v: float | None) -> str:
    return "" if v is None else f"{v / 1000:,.1f}"


def tree_rows(rows: Iterable[Mapping[str, Any]], *, include_empty: bool = False) -> list[tuple[str, ...]]:
    """Table cells, parents before children, each node indented by its depth below the shallowest shown (pure)."""
    kept = [r for r in rows if include_empty or r["devices_known"] > 0]
    kept.sort(key=lambda r: r["node_path"].split("/"))
    top = min((r["depth"] for r in kept), default=1)
    out = []
    for r in kept:
        name = r["node_path"] if r["depth"] == top else r["node_path"].rsplit("/", 1)[-1]
        end = r["window_end"]
        if isinstance(end, (int, float)):
            end = datetime.fromtimestamp(end / 1000, tz=timezone.utc)
        out.append((
            "  " * (r["depth"] - top) + name, end.astimezone(timezone.utc).strftime("%H:%M:%S"),
            str(r["devices_known"]), str(r["devices_reporting"]), str(r["estimated_devices"]),
            _kilo(r["battery_w"]), _kilo(r["solar_w"]), _kilo(r["load_w"]), _kilo(r["grid_w"]),
            _kilo(r["energy_available_wh"]), "" if r["soc_pct"] is None else f"{r['soc_pct']:.1f}",
            _kilo(r["discharge_available_w"]), _kilo(r["charge_available_w"]),
        ))
    return out


def render_tree(cells: list[tuple[str, ...]], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(_COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in cells:
        table.add_row(*row)
    return table


def cmd_tree(args: argparse.Namespace) -> int:
    import psycopg
    from rich.console import Console

    from sinks.node_state import read_node_state

    settings = load_settings(args)
    if args.depth < 0:
        raise UserError("--depth must be 0 or more")
    try:
        rows = read_node_state(settings.postgres_dsn, args.path, levels=args.depth)
    except psycopg.errors.UndefinedTable:
        raise UserError("no node_state table: run `vpp up` (it migrates) or start flow store-aggregates") from None
    except psycopg.OperationalError as exc:
        raise unreachable("PostgreSQL", redact_dsn(settings.postgres_dsn), postgres_reason(exc)) from None
    if not rows:
        roots = read_node_state(settings.postgres_dsn, None, levels=0) if args.path else []
        if roots:
            names = ", ".join(sorted(r["node_path"] for r in roots))
            raise UserError(f"no node {args.path!r} in the fleet tree (its roots: {names})")
        raise UserError("no node state at all yet: are flows aggregate and store-aggregates running?")
    cells = tree_rows(rows, include_empty=args.all)
    Console().print(render_tree(cells, f"fleet tree {args.path or ''} (latest closed window per node)".replace("  ", " ")))
    if not cells:
        print(f"every node shown has no known device: all went stale (silent for more than {settings.staleness_s} s); "
              "--all shows their last windows")
    return 0


def add_commands(sub) -> None:
    p = command(sub, "tree", cmd_tree, help="show the live fleet tree (latest window per node) from PostgreSQL")
    p.add_argument("path", nargs="?", default=None, help="region path to start at (default: the roots)")
    p.add_argument("--depth", type=int, default=1, help="levels below PATH to show (default 1)")
    p.add_argument("--all", action="store_true", help="also show nodes whose devices all went stale")
