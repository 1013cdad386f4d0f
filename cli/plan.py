"""`vpp plan`: the battery schedule optimizer on a CSV of 5-minute prices.

The prices file has the header ``interval_start,price_usd_per_mwh``, one ISO
8601 timestamp and one price per line, in consecutive 5-minute steps. The
command prints ``{"status", "revenue_usd", "final_energy_wh", "schedule":
[{"interval_start", "charge_w", "discharge_w", "energy_wh"}, ...]}`` as JSON on
stdout, where ``energy_wh`` is the stored energy at the START of the interval
and ``final_energy_wh`` the energy after the last one. Exit code 0 when the
status is ``"optimal"``; otherwise the JSON is still printed (with an empty
schedule unless a time limit stopped the search after a feasible plan was
found), a one-line reason goes to stderr and the exit code is 1. Bad input
(file, header, a value, spacing, a battery parameter, an unavailable solver) is
a one-line error and exit code 1 with nothing on stdout. The file is UTF-8
(a byte-order mark is allowed); a price beyond +-1,000,000 $/MWh is refused
as a unit or data error (markets cap prices in the thousands), and a plan
whose numbers would not be finite is an error, never non-standard JSON.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from datetime import datetime
from pathlib import Path

from vpp.errors import UserError

__all__ = ["add_commands", "read_prices"]

_HEADER = ["interval_start", "price_usd_per_mwh"]
#: Largest price magnitude accepted, $/MWh. Real caps are in the thousands (ERCOT 5,000, NEM ~18,000):
#: anything beyond a million is a unit or data error, and 1e308 overflows revenue to infinity.
MAX_ABS_PRICE_USD_PER_MWH = 1e6
_STATUS_HINTS = {
    "infeasible": "no schedule meets the reserve, final SoC and power limits: "
    "check --soc-pct, --reserve-pct, --final-soc-pct and the charge limit",
    "unbounded": "the problem is unbounded; this is a bug, please report it with the inputs",
    "not_solved": "the solver stopped before proving a schedule optimal (time limit?)",
    "error": "the solver failed; run again, or try the other --solver",
}


def read_prices(path: Path):
    """The ``PricePoint``s of a prices CSV; ``UserError`` naming the line of any problem."""
    from models.optimize import INTERVAL, PricePoint

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read prices file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not part of the header
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file (byte {exc.start} is {data[exc.start:exc.start + 1]!r}): "
                        f"give a CSV with the header {','.join(_HEADER)}") from None
    points: list[PricePoint] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != _HEADER:
            raise UserError(f"{path}:1: expected the header '{','.join(_HEADER)}', got {','.join(header or [])!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise UserError(f"{path}:{line}: expected 2 fields (interval_start,price_usd_per_mwh), got {len(row)}")
            try:
                start = datetime.fromisoformat(row[0].strip())
            except ValueError:
                raise UserError(f"{path}:{line}: interval_start {row[0]!r} is not an ISO 8601 timestamp") from None
            try:
                price = float(row[1])
            except ValueError:
                price = math.nan
            if not math.isfinite(price):
                raise UserError(f"{path}:{line}: price_usd_per_mwh {row[1]!r} is not a finite number")
            if abs(price) > MAX_ABS_PRICE_USD_PER_MWH:
                raise UserError(f"{path}:{line}: price_usd_per_mwh {row[1]!r} is beyond +-{MAX_ABS_PRICE_USD_PER_MWH:,.0f} "
                                "$/MWh, the most this accepts: check the unit ($/MWh) and the data")
            if points:
                previous = points[-1].interval_start
                if (start.tzinfo is None) != (previous.tzinfo is None):
                    raise UserError(f"{path}:{line}: mixes timestamps with and without a UTC offset")
                if start - previous != INTERVAL:
                    raise UserError(
                        f"{path}:{line}: interval_start {start.isoformat()} is not 5 minutes after "
                        f"{previous.isoformat()}: give consecutive 5-minute intervals in order"
                    )
            points.append(PricePoint(start, price))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: not a readable CSV line ({exc})") from None
    if not points:
        raise UserError(f"{path}: no prices after the header")
    return points


def cmd_plan(args: argparse.Namespace) -> int:
    from models.optimize import Battery, SolverUnavailableError, plan

    prices = read_prices(Path(args.prices))
    try:
        battery = Battery(
            capacity_wh=args.capacity_wh,
            max_charge_w=args.max_charge_w,
            max_discharge_w=args.max_discharge_w,
            soc_pct=args.soc_pct,
            reserve_pct=args.reserve_pct,
            efficiency=args.efficiency,
            degradation_usd_per_mwh=args.degradation_usd_per_mwh,
            final_soc_pct=args.final_soc_pct,
        )
    except ValueError as exc:
        raise UserError(f"invalid battery: {exc}") from None
    try:
        schedule = plan(prices, battery, solver=args.solver, time_limit_s=args.time_limit_s)
    except SolverUnavailableError as exc:
        raise UserError(str(exc)) from None
    try:
        text = json.dumps(schedule.as_dict(), allow_nan=False)
    except ValueError:  # an overflow to inf/NaN would print JSON that no parser reads
        raise UserError("the plan's numbers are not finite (an overflow): check the battery sizes and the prices") from None
    print(text)
    if schedule.status != "optimal":
        print(f"vpp plan: status {schedule.status}: {_STATUS_HINTS[schedule.status]}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="optimal battery charge/discharge schedule for a CSV of 5-minute prices, as JSON",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prices", required=True, metavar="FILE.csv", help="CSV with header interval_start,price_usd_per_mwh")
    p.add_argument("--capacity-wh", type=float, required=True, help="usable energy capacity C (Wh)")
    p.add_argument("--max-charge-w", type=float, required=True, help="charge power limit Pc (W)")
    p.add_argument("--max-discharge-w", type=float, required=True, help="discharge power limit Pd (W)")
    p.add_argument("--soc-pct", type=float, required=True, help="state of charge at the start of the first interval (%%)")
    p.add_argument("--reserve-pct", type=float, required=True, help="minimum state of charge after every interval (%%)")
    p.add_argument("--efficiency", type=float, required=True, help="round-trip efficiency, a fraction in (0, 1]")
    p.add_argument("--degradation-usd-per-mwh", type=float, required=True, help="degradation cost per MWh discharged ($)")
    p.add_argument("--final-soc-pct", type=float, default=None, help="minimum state of charge at the end (%%)")
    p.add_argument("--solver", choices=("cbc", "highs"), default="cbc", help="MILP solver (highs needs highspy)")
    p.add_argument("--time-limit-s", type=float, default=None, help="stop the solver after this many seconds")
    p.set_defaults(func=cmd_plan)
