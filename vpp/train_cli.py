"""`vpp train` and `vpp forecast`: the price forecaster on a CSV of 5-minute prices.

``vpp train --prices FILE.csv --out MODEL`` fits ``models.forecast`` on the
whole file and writes the model directory (``booster.ubj``, XGBoost's native
format, and ``metadata.json``); it prints a JSON summary (rows, training MAE,
time span). ``vpp forecast --model MODEL --prices FILE.csv`` prints the 288
intervals after the file's last one as a prices CSV (``interval_start,
price_usd_per_mwh``), which ``vpp plan --prices`` reads. Prices files use the
format of ``vpp plan`` (``vpp market --history-days`` writes one).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from vpp.errors import UserError

__all__ = ["add_commands"]


def cmd_train(args: argparse.Namespace) -> int:
    from models import forecast
    from vpp.plan_cli import read_prices

    history = read_prices(Path(args.prices))
    if history[0].interval_start.tzinfo is None:
        raise UserError(f"{args.prices}: timestamps need a UTC offset (e.g. 2026-06-01T00:00:00Z)")
    began = time.perf_counter()
    try:
        model = forecast.fit(history, utc_offset_h=args.utc_offset_h, rounds=args.rounds, seed=args.seed)
    except ValueError as exc:
        raise UserError(f"cannot train on {args.prices}: {exc}") from None
    took_s = time.perf_counter() - began
    path = forecast.save(model, args.out)
    meta = model.metadata
    print(json.dumps({
        "out": str(path),
        "intervals": len(history),
        "training_rows": meta["training_rows"],
        "training_mae_usd_per_mwh": round(meta["training_mae_usd_per_mwh"], 3),
        "trained_from": meta["trained_from"],
        "trained_to": meta["trained_to"],
        "fit_s": round(took_s, 2),
    }))
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from models import forecast
    from models.optimize import INTERVAL
    from vpp.plan_cli import read_prices

    try:
        model = forecast.load(args.model)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    history = read_prices(Path(args.prices))
    if history[0].interval_start.tzinfo is None:
        raise UserError(f"{args.prices}: timestamps need a UTC offset (e.g. 2026-06-01T00:00:00Z)")
    origin = history[-1].interval_start + INTERVAL
    points = forecast.predict(model, origin, history)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["interval_start", "price_usd_per_mwh"])
    for p in points:
        writer.writerow([p.interval_start.isoformat().replace("+00:00", "Z"), f"{p.price_usd_per_mwh:.2f}"])
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the XGBoost price forecaster on a CSV of 5-minute prices",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prices", required=True, metavar="FILE.csv", help="CSV with header interval_start,price_usd_per_mwh")
    p.add_argument("--out", required=True, metavar="MODEL", help="model directory to write")
    p.add_argument("--utc-offset-h", type=float, default=-8.0,
                   help="pricing node's local standard time, for calendar features (default -8, as vpp market)")
    p.add_argument("--rounds", type=int, default=25,
                   help="boosting rounds on the linear base's residual (default 25, as models.forecast.DEFAULT_ROUNDS)")
    p.add_argument("--seed", type=int, default=0, help="XGBoost seed (default 0)")
    p.set_defaults(func=cmd_train)

    f = sub.add_parser("forecast", help="forecast the 288 intervals after a prices CSV with a trained model, as CSV")
    f.add_argument("--model", required=True, metavar="MODEL", help="model directory written by vpp train")
    f.add_argument("--prices", required=True, metavar="FILE.csv", help="price history; the forecast starts after it")
    f.set_defaults(func=cmd_forecast)
