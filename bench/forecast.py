"""Price forecaster against persistence and same-time-yesterday, on data it was not trained on.

A 120-day history from the market simulator (``vpp.market.prices``, seed
``--seed``); the model trains on the first 113 days and forecasts the last 7
from 7 daily origins (local midnight of each test day, 288 steps each).
Prints the MAE ($/MWh) of the model and of both baselines over the same
2016 intervals, and the ratio model / better baseline (target <= 0.8). As a
reference it also prints the MAE of an oracle that knows the generator's
formula and lacks only each test day's own weather draw, noise and spikes:
how far any forecast from past prices can go on this data.

    python bench/forecast.py [--seed 7] [--days 120] [--test-days 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import forecast  # noqa: E402
from models.features import epoch_ms  # noqa: E402
from vpp.market.prices import PriceModel, expected_day_shape, generate_prices  # noqa: E402

DAY = 288


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--test-days", type=int, default=7)
    args = parser.parse_args(argv)

    model = PriceModel()
    # Local midnight of the node, so that daily origins are local midnights.
    start = datetime(2026, 3, 1, tzinfo=UTC) - timedelta(hours=model.utc_offset_h)
    history = generate_prices(start, args.days * DAY, seed=args.seed, model=model)
    split = (args.days - args.test_days) * DAY
    train = history[:split]

    began = time.perf_counter()
    fitted = forecast.fit(train, utc_offset_h=model.utc_offset_h)
    fit_s = time.perf_counter() - began

    actual = np.array([p.price_usd_per_mwh for p in history])
    predicted, persistence, yesterday, oracle = [], [], [], []
    began = time.perf_counter()
    for day in range(args.test_days):
        origin = split + day * DAY
        # The whole history is passed: predict must ignore everything from the origin on.
        points = forecast.predict(fitted, history[origin].interval_start, history)
        predicted.append([p.price_usd_per_mwh for p in points])
        persistence.append(np.full(DAY, actual[origin - 1]))
        yesterday.append(actual[origin - DAY : origin])
        oracle.append(expected_day_shape(epoch_ms(history[origin].interval_start), seed=args.seed, model=model))
    predict_s = time.perf_counter() - began
    truth = actual[split:]
    mae = {
        "forecast": float(np.mean(np.abs(np.concatenate(predicted) - truth))),
        "persistence": float(np.mean(np.abs(np.concatenate(persistence) - truth))),
        "same_time_yesterday": float(np.mean(np.abs(np.concatenate(yesterday) - truth))),
    }
    oracle_mae = float(np.mean(np.abs(np.concatenate(oracle) - truth)))
    better = min(mae["persistence"], mae["same_time_yesterday"])
    ratio = mae["forecast"] / better

    print(f"history {args.days} days (seed {args.seed}), train {args.days - args.test_days} days, "
          f"test {args.test_days} daily origins x {DAY} steps")
    print(f"training rows {fitted.metadata['training_rows']:,}; fit {fit_s:.1f} s, "
          f"{args.test_days} forecasts {predict_s:.2f} s")
    for name, value in mae.items():
        print(f"  MAE {name:<20} {value:8.2f} $/MWh")
    print(f"  forecast / better baseline   {ratio:8.3f}  (target <= 0.8: {'met' if ratio <= 0.8 else 'NOT met'})")
    print("  reference: the generator's own formula, weather expected from the past days")
    print("  (about the best any forecast from past prices can do on this data):")
    print(f"  MAE oracle {oracle_mae:8.2f} $/MWh, oracle / better baseline {oracle_mae / better:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
