"""Solve times of the battery optimizer by horizon and solver, against its LP relaxation.

Run: ``python bench/optimize.py [--runs 5] [--seed 7] [--instances 1]``. Each
row times the whole ``plan`` call (model building, solver process or library
call, reading the result back), median over ``--runs`` runs, next to
``relaxation_bound`` on the same instance in the same run: the same model
with the charge/discharge binaries relaxed, i.e. what the binaries cost.
With ``--instances N`` each row draws N price days (seeds ``seed*1000+T+k``)
and also prints the slowest one's median: one random day says little about
branch-and-bound.

Two price days: ``typical``, a diurnal curve with noise and a few negative
intervals (binaries almost always slack), and ``negative``, a day of deeply
negative prices with a low round-trip efficiency and no degradation cost,
where charging and discharging at once would burn energy for profit, so the
binaries bind and branch-and-bound has real work to do.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.optimize import INTERVAL, Battery, PricePoint, SolverUnavailableError, plan, relaxation_bound  # noqa: E402

HORIZONS = (24, 96, 288)
START = datetime(2024, 6, 1, tzinfo=UTC)


def _typical(n: int, rng: random.Random) -> tuple[list[PricePoint], Battery]:
    values = []
    for k in range(n):
        hour = (k * 5 / 60) % 24
        diurnal = 45 + 35 * math.sin((hour - 9) / 24 * 2 * math.pi) + 25 * math.exp(-((hour - 19) ** 2) / 2)
        spike = -80 if rng.random() < 0.03 else (250 if rng.random() < 0.01 else 0)
        values.append(diurnal + rng.gauss(0, 8) + spike)
    b = Battery(20e6, 5e6, 5e6, soc_pct=50, reserve_pct=10, efficiency=0.9, degradation_usd_per_mwh=5,
                final_soc_pct=50)  # fmt: skip
    return [PricePoint(START + k * INTERVAL, v) for k, v in enumerate(values)], b


def _negative(n: int, rng: random.Random) -> tuple[list[PricePoint], Battery]:
    values = [rng.gauss(-100, 80) for _ in range(n)]
    b = Battery(20e6, 5e6, 4e6, soc_pct=90, reserve_pct=10, efficiency=0.7, degradation_usd_per_mwh=0,
                final_soc_pct=50)  # fmt: skip
    return [PricePoint(START + k * INTERVAL, v) for k, v in enumerate(values)], b


SCENARIOS = {"typical": _typical, "negative": _negative}


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per cell; the median is reported")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--solvers", default="cbc,highs")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--instances", type=int, default=1, help="price days per row; the slowest is printed too")
    args = parser.parse_args(argv)

    print(f"{'scenario':<9} {'T':>4} {'solver':<6} {'status':<10} {'revenue $':>11} {'LP bound $':>11} "
          f"{'MILP s':>8} {'LP s':>8} {'MILP/LP':>8} {'slowest s':>9}")  # fmt: skip
    for scenario in args.scenarios.split(","):
        for n in HORIZONS:
            days = [SCENARIOS[scenario](n, random.Random(args.seed * 1000 + n + k)) for k in range(args.instances)]
            for solver in args.solvers.split(","):
                try:
                    rows = [_time_day(prices, b, solver, args.runs) for prices, b in days]
                except SolverUnavailableError as exc:
                    print(f"{scenario:<9} {n:>4} {solver:<6} unavailable: {exc}")
                    continue
                schedule, bound, milp, lp = rows[0]
                revenue = f"{schedule.revenue_usd:11.2f}" if schedule.revenue_usd is not None else f"{'-':>11}"
                bound_text = f"{bound:11.2f}" if bound is not None else f"{'-':>11}"
                slowest = max(row[2] for row in rows)
                print(f"{scenario:<9} {n:>4} {solver:<6} {schedule.status:<10} {revenue} {bound_text} "
                      f"{milp:8.3f} {lp:8.3f} {milp / lp:8.1f} {slowest:9.3f}")  # fmt: skip
    return 0


def _time_day(prices, b, solver: str, runs: int):
    """``(schedule, LP bound, median plan s, median relaxation s)`` of one price day."""
    milp_s, lp_s = [], []
    for _ in range(runs):
        seconds, schedule = _timed(plan, prices, b, solver=solver)
        milp_s.append(seconds)
        seconds, bound = _timed(relaxation_bound, prices, b, solver=solver)
        lp_s.append(seconds)
    return schedule, bound, statistics.median(milp_s), statistics.median(lp_s)


if __name__ == "__main__":
    sys.exit(main())
