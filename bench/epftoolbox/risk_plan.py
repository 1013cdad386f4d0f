"""Plain plan vs risk-aware plan, day by day, on a day-ahead backtest's forecasts; valued at the actual prices.

    python bench/epftoolbox/risk_plan.py BACKTEST.csv [--days N]

BACKTEST.csv is what ``vpp forecast backtest --out`` writes
(``interval_start,actual,forecast,p10,p50,p90``). For every whole day with
quantiles, a battery (1 MW, 2 MWh, round trip 0.9, degradation 5 per MWh,
starting and ending the day at 50 %) is planned three ways with
``models.optimize.plan``: on the point forecast (plain), against p10 for
selling and p90 for buying (risk-aware: it trades only where the spread
survives the forecast's uncertainty), and with perfect foresight (the
bound). Each plan is then valued at the actual prices. Prints the total, the
mean per day, the five worst days and the share of days that lose money.
"""

from __future__ import annotations

import argparse
import csv
import math
from datetime import datetime, timedelta

from models.optimize import Battery, PricePoint, plan

BATTERY = Battery(capacity_wh=2e6, max_charge_w=1e6, max_discharge_w=1e6, soc_pct=50.0, reserve_pct=5.0,
                  efficiency=0.9, degradation_usd_per_mwh=5.0, final_soc_pct=50.0)


def realized_usd(schedule, actual: list[float], interval_h: float) -> float:
    deg = BATTERY.degradation_usd_per_mwh
    return sum((a * (i.discharge_w - i.charge_w) - deg * i.discharge_w) * interval_h / 1e6
               for i, a in zip(schedule.intervals, actual))


def days_of(path: str):
    rows = list(csv.DictReader(open(path)))
    starts = [datetime.fromisoformat(r["interval_start"].replace("Z", "+00:00")) for r in rows]
    interval = starts[1] - starts[0]
    per_day = timedelta(days=1) // interval
    for k in range(0, len(rows) - per_day + 1, per_day):
        day = rows[k: k + per_day]
        if any(not r["actual"] or not r["p10"] for r in day):
            continue
        yield starts[k: k + per_day], [{c: float(r[c]) for c in ("actual", "forecast", "p10", "p90")} for r in day], \
            interval


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backtest")
    parser.add_argument("--days", type=int, default=None, help="only the first N whole days")
    args = parser.parse_args(argv)
    results = {"plain": [], "risk-aware": [], "perfect foresight": []}
    for n, (starts, day, interval) in enumerate(days_of(args.backtest)):
        if args.days is not None and n >= args.days:
            break
        hours = interval / timedelta(hours=1)
        actual = [r["actual"] for r in day]
        point = [PricePoint(s, r["forecast"]) for s, r in zip(starts, day)]
        low = [PricePoint(s, r["p10"]) for s, r in zip(starts, day)]
        truth = [PricePoint(s, r["actual"]) for s, r in zip(starts, day)]
        plans = {
            "plain": plan(point, BATTERY, interval=interval),
            "risk-aware": plan(low, BATTERY, interval=interval, charge_prices=[r["p90"] for r in day]),
            "perfect foresight": plan(truth, BATTERY, interval=interval),
        }
        for name, schedule in plans.items():
            value = realized_usd(schedule, actual, hours) if schedule.status == "optimal" else math.nan
            results[name].append((starts[0].date().isoformat(), value))
    print(f"{'plan':20} {'total':>10} {'per day':>8} {'days < 0':>8}  five worst days")
    for name, values in results.items():
        ok = [v for _, v in values if not math.isnan(v)]
        worst = sorted(values, key=lambda dv: dv[1])[:5]
        losing = sum(1 for v in ok if v < 0)
        print(f"{name:20} {sum(ok):10.0f} {sum(ok) / max(len(ok), 1):8.1f} {losing:8d}  "
              + ", ".join(f"{d} {v:.0f}" for d, v in worst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
