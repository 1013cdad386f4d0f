"""`vpp train` and `vpp forecast`: the price forecasters on a prices CSV.

Two models: ``lear`` (``models.dayahead``: a LEAR-style ensemble for any fixed
interval with regressors, day-ahead, with p10/p50/p90) and ``xgboost``
(``models.forecast``: the autobidder's rolling 5-minute model). The text below
describes the xgboost path; the lear one writes ``metadata.json`` and
``coefficients.npz`` and forecasts to the end of the file's last day (or the
whole next day), with columns ``p10/p50/p90_usd_per_mwh``.

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
import io
import json
import math
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

from cli.backtest import add_backtest, file_utc_offset_ms, single_threaded_blas
from vpp.errors import UserError, first_line

__all__ = ["add_commands"]


def _fit_and_save(args: argparse.Namespace, fit, save):
    """``(model, its path, fit seconds)``: ``fit()`` then ``save(model, args.out)``, each failure a clear error."""
    began = time.perf_counter()
    try:
        model = fit()
    except ValueError as exc:
        raise UserError(f"cannot train on {args.prices}: {exc}") from None
    took_s = time.perf_counter() - began
    try:
        return model, save(model, args.out), took_s
    except OSError as exc:
        raise UserError(f"cannot write the model to {args.out}: {exc.strerror or exc}") from None


def _train_dayahead(args: argparse.Namespace, series) -> int:
    from models import dayahead

    offset_ms = file_utc_offset_ms(series, args.utc_offset_h, args.prices)
    model, path, took_s = _fit_and_save(args, lambda: dayahead.fit(series, utc_offset_ms=offset_ms), dayahead.save)
    meta = model.metadata
    holdout = meta["holdout_mae_usd_per_mwh"]
    print(json.dumps({
        "out": str(path),
        "method": "lear",
        "intervals": len(series.points),
        "interval_minutes": series.interval.total_seconds() / 60,
        "regressors": meta["regressors"],
        "windows_days": meta["windows_days"],
        "holdout_days": meta["holdout_days"],
        "holdout_mae_usd_per_mwh": None if holdout is None else round(holdout, 3),
        "trained_from": meta["trained_from"],
        "trained_to": meta["trained_to"],
        "fit_s": round(took_s, 2),
    }))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    single_threaded_blas()
    from models import forecast
    from cli.plan import read_price_file

    series = read_price_file(Path(args.prices))
    method = args.method
    if method == "auto":
        method = "xgboost" if series.interval == timedelta(minutes=5) and not series.regressor_names else "lear"
    if method == "lear":
        return _train_dayahead(args, series)
    if series.interval != timedelta(minutes=5) or series.regressor_names:
        raise UserError(f"{args.prices}: --method xgboost takes 5-minute prices without regressors; "
                        "use --method lear for this file")
    history = list(series.points)
    if args.utc_offset_h is None:
        args.utc_offset_h = -8.0
    if history[0].interval_start.tzinfo is None:
        raise UserError(f"{args.prices}: timestamps need a UTC offset (e.g. 2026-06-01T00:00:00Z)")
    model, path, took_s = _fit_and_save(
        args, lambda: forecast.fit(history, utc_offset_h=args.utc_offset_h, rounds=args.rounds, seed=args.seed),
        forecast.save)
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


def _forecast_dayahead(model, series, args) -> int:
    from models import dayahead
    from models.features import from_epoch_ms

    try:
        starts, rows = dayahead.predict(model, series)
    except ValueError as exc:
        raise UserError(f"cannot forecast from {args.prices}: {exc}") from None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["interval_start", "price_usd_per_mwh", "p10_usd_per_mwh", "p50_usd_per_mwh", "p90_usd_per_mwh"])
    for start, row in zip(starts, rows):
        writer.writerow([from_epoch_ms(start).isoformat().replace("+00:00", "Z"), *(f"{v:.2f}" for v in row)])
    sys.stdout.write(out.getvalue())
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from models import forecast
    from models.optimize import INTERVAL
    from cli.plan import read_price_file

    if not args.model or not args.prices:
        raise UserError("vpp forecast needs --model MODEL and --prices FILE.csv (or: vpp forecast backtest ...)")
    model = _load_model(args.model)
    series = read_price_file(Path(args.prices))
    if not isinstance(model, forecast.PriceForecaster):
        return _forecast_dayahead(model, series, args)
    history = list(series.points)
    if history[0].interval_start.tzinfo is None:
        raise UserError(f"{args.prices}: timestamps need a UTC offset (e.g. 2026-06-01T00:00:00Z)")
    origin = history[-1].interval_start + INTERVAL
    points = forecast.predict(model, origin, history)
    if not all(math.isfinite(p.price_usd_per_mwh) for p in points):
        raise UserError(f"the model {args.model} forecast a non-finite price from {args.prices}: retrain with vpp train")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["interval_start", "price_usd_per_mwh"])
    for p in points:
        writer.writerow([p.interval_start.isoformat().replace("+00:00", "Z"), f"{p.price_usd_per_mwh:.2f}"])
    sys.stdout.write(out.getvalue())
    return 0


#: XGBoost's message prefix: ``[hh:mm:ss] /path/of/source.cc:123: ``, then often ``Check failed: <expr> : ``.
_XGB_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")
_XGB_CHECK = re.compile(r"^Check failed: .*? : ")


def _library_message(exc: BaseException) -> str:
    """The first meaningful line of a native library's error: no C++ stack trace, no source location."""
    line = _XGB_PREFIX.sub("", first_line(str(exc)))
    return _XGB_CHECK.sub("", line).strip() or type(exc).__name__


def _load_model(directory: str):
    """``models.forecast.load``, with what goes wrong (no model, another version, a corrupt booster) as a UserError."""
    from xgboost.core import XGBoostError

    from models import price_model

    try:
        return price_model.load(directory)
    except XGBoostError as exc:
        raise UserError(f"cannot load the price model in {directory}: {_library_message(exc)} "
                        "(retrain with vpp train)") from None
    except UnicodeDecodeError:  # XGBoost quoting undecodable bytes of a corrupt booster.ubj in its message
        raise UserError(f"cannot load the price model in {directory}: booster.ubj is not an XGBoost model "
                        "(retrain with vpp train)") from None
    except ValueError as exc:
        raise UserError(first_line(str(exc))) from None


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a price forecaster on a prices CSV (any fixed interval, optional regressors)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prices", required=True, metavar="FILE.csv", help="CSV with header interval_start,price_usd_per_mwh")
    p.add_argument("--out", required=True, metavar="MODEL", help="model directory to write")
    p.add_argument("--method", choices=("auto", "lear", "xgboost"), default="auto",
                   help="lear: the day-ahead LEAR-style ensemble (any interval, regressors); xgboost: the autobidder's "
                        "rolling 5-minute model; auto (default): xgboost for 5-minute prices without regressors")
    p.add_argument("--utc-offset-h", type=float, default=None,
                   help="pricing node's local standard time, for calendar features (default: -8 as vpp market for "
                        "xgboost, the file's own UTC offset for lear)")
    p.add_argument("--rounds", type=int, default=25,
                   help="boosting rounds on the linear base's residual (default 25, as models.forecast.DEFAULT_ROUNDS)")
    p.add_argument("--seed", type=int, default=0, help="XGBoost seed (default 0)")
    p.set_defaults(func=cmd_train)

    f = sub.add_parser("forecast", help="forecast the intervals after a prices CSV with a trained model, as CSV; "
                                        "or backtest the day-ahead forecaster (vpp forecast backtest)")
    f.add_argument("--model", metavar="MODEL", help="model directory written by vpp train")
    f.add_argument("--prices", metavar="FILE.csv",
                   help="price history; the forecast starts after it (xgboost: 288 intervals; lear: to the end of the "
                        "day, or the whole next day; trailing rows without a price give that day's regressors)")
    f.set_defaults(func=cmd_forecast)
    add_backtest(f.add_subparsers(dest="forecast_command", metavar="backtest"))
