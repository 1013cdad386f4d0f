"""`vpp plan`: the battery schedule optimizer on a CSV of prices at any fixed interval.

The prices file has the header ``interval_start,price_usd_per_mwh`` (then
optional regressor columns, ignored here), one ISO 8601 timestamp and one
price per line, in consecutive steps of one fixed interval (5 min, 15 min,
30 min, 1 h, ...: inferred from the file; see ``models.price_series``). The
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
import json
import sys
from pathlib import Path

from vpp.errors import UserError

__all__ = ["add_commands", "read_price_file", "read_prices"]

_HEADER = ["interval_start", "price_usd_per_mwh"]
_STATUS_HINTS = {
    "infeasible": "no schedule meets the reserve, final SoC and power limits: "
    "check --soc-pct, --reserve-pct, --final-soc-pct and the charge limit",
    "unbounded": "the problem is unbounded; this is a bug, please report it with the inputs",
    "not_solved": "the solver stopped before proving a schedule optimal (time limit?)",
    "error": "the solver failed; run again, or try the other --solver",
}


def read_price_file(path: Path):
    """The ``PriceSeries`` of a prices CSV (any fixed interval, optional regressors); ``UserError`` naming the line."""
    from models.price_series import PricesFileError, parse_prices

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read prices file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not part of the header
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file (byte {exc.start} is {data[exc.start:exc.start + 1]!r}): "
                        f"give a CSV with the header {','.join(_HEADER)}") from None
    try:
        return parse_prices(text, str(path))
    except PricesFileError as exc:
        raise UserError(str(exc)) from None


def read_prices(path: Path):
    """The ``PricePoint``s of a prices CSV; ``UserError`` naming the line of any problem."""
    return list(read_price_file(path).points)


_RISK_COLUMNS = ("p10_usd_per_mwh", "p90_usd_per_mwh")


def _risk_prices(series, source: str):
    """Discharge valued at p10, charging priced at p90 (the columns ``vpp forecast`` writes for a lear model)."""
    from models.optimize import PricePoint

    missing = [c for c in _RISK_COLUMNS if c not in series.regressor_names]
    if missing:
        raise UserError(f"{source}: --risk-quantiles needs the columns {', '.join(_RISK_COLUMNS)} "
                        "(vpp forecast writes them with a model trained by vpp train --method lear)")
    low, high = (series.regressor_names.index(c) for c in _RISK_COLUMNS)
    priced = len(series.points)
    sell = [PricePoint(p.interval_start, float(v)) for p, v in zip(series.points, series.regressors[:priced, low])]
    return sell, [float(v) for v in series.regressors[:priced, high]]


def cmd_plan(args: argparse.Namespace) -> int:
    from models.optimize import Battery, SolverUnavailableError, plan

    series = read_price_file(Path(args.prices))
    prices, charge_prices = list(series.points), None
    if args.risk_quantiles:
        prices, charge_prices = _risk_prices(series, args.prices)
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
        schedule = plan(prices, battery, interval=series.interval, solver=args.solver, time_limit_s=args.time_limit_s,
                        charge_prices=charge_prices)
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
        help="optimal battery charge/discharge schedule for a CSV of prices (any fixed interval), as JSON",
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
    p.add_argument("--risk-quantiles", action="store_true",
                   help="plan against the forecast's p10 (what discharging earns) and p90 (what charging costs): "
                        "bids only where the spread survives the forecast's uncertainty; revenue_usd is valued so")
    p.add_argument("--time-limit-s", type=float, default=None, help="stop the solver after this many seconds")
    p.set_defaults(func=cmd_plan)
