"""The forecast worker's answer to one request, pure: the configured model's forecast at the request's interval,
else persistence.

The model (``settings.forecast_model_dir``, loaded once by ``models.price_model.load``) is either

* the day-ahead model ``vpp train --method lear`` writes (``models.dayahead``, any interval): the
  whole horizon, day by day (``forecast_ahead``), with the request's regressors when it carries
  every one the model was trained with; without them otherwise (each missing one counts as its
  calibration median, and ``detail`` names them); method ``lear``, with p10 and p90 per interval (the
  forecast plus the 10 % and 90 % quantiles of the model's holdout errors, as ``vpp forecast`` writes);
* or the XGBoost model (``models.forecast``, 5-minute intervals only): its 288 intervals, then
  persistence; method ``xgboost``.

Persistence (each interval's price a day earlier, else the last known price) answers when no model
is configured, when the model is for another interval length than the request's ``interval_ms``, or
when it cannot forecast (too little history): method ``persistence``, and ``detail`` says why.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import numpy as np

from models.dayahead import DayAheadModel, forecast_ahead, quantile_band
from models.price_series import describe_interval

__all__ = ["DEFAULT_INTERVAL_MS", "answer_forecast", "persistence_forecast"]

#: The interval of a request written before requests carried one.
DEFAULT_INTERVAL_MS = 300_000
_DAY_MS = 86_400_000


def persistence_forecast(history: list[float | None], history_start_ms: int, origin_ms: int, horizon: int,
                         interval_ms: int = DEFAULT_INTERVAL_MS) -> list[float]:
    """Each interval's price a day earlier when known, else the last known price (pure)."""
    known = {history_start_ms + k * interval_ms: v for k, v in enumerate(history) if v is not None and math.isfinite(v)}
    if not known:
        raise ValueError("no known price in the request's history: cannot forecast")
    last = known[max(k for k in known if k < origin_ms)] if any(k < origin_ms for k in known) else known[max(known)]
    out, forecast = [], {}
    for step in range(horizon):
        start = origin_ms + step * interval_ms
        value = known.get(start - _DAY_MS, forecast.get(start - _DAY_MS, last))
        forecast[start] = value
        out.append(float(value))
    return out


def _length(interval_ms: int) -> str:
    return describe_interval(timedelta(milliseconds=interval_ms))


def _check_interval(model_interval_ms: int, interval_ms: int, retrain: str) -> None:
    if int(model_interval_ms) != interval_ms:
        raise ValueError(f"it forecasts intervals of {_length(model_interval_ms)}, the market's last "
                         f"{_length(interval_ms)}: {retrain}")


def _xgboost(model, request: dict[str, Any], interval_ms: int) -> tuple[list[float], str | None]:
    from models.forecast import predict
    from models.optimize import PricePoint

    _check_interval(model.metadata.get("interval_ms", DEFAULT_INTERVAL_MS), interval_ms,
                    "train a day-ahead model on this market's prices (vpp train --method lear)")
    origin, horizon, start = int(request["interval_start"]), int(request["horizon"]), int(request["history_start"])
    history = request["history_usd_per_mwh"]
    points = [PricePoint(datetime.fromtimestamp((start + k * interval_ms) / 1000, timezone.utc), float(v))
              for k, v in enumerate(history) if v is not None]
    forecast = predict(model, datetime.fromtimestamp(origin / 1000, timezone.utc), points)
    prices = [p.price_usd_per_mwh for p in forecast][:horizon]
    if len(prices) < horizon:  # the model forecasts 288 intervals: persistence beyond
        prices += persistence_forecast(history, start, origin, horizon, interval_ms)[len(prices):]
    return prices, None


def _dayahead(model, request: dict[str, Any], interval_ms: int) -> tuple[list[float], str | None]:
    _check_interval(model.metadata["interval_ms"], interval_ms, "train it on this market's prices (vpp train)")
    origin, horizon, start = int(request["interval_start"]), int(request["horizon"]), int(request["history_start"])
    rows = (origin - start) // interval_ms + horizon
    names = list(model.metadata["regressors"])
    given = {r["name"]: r["values"] for r in request.get("regressors") or []}
    matrix = np.full((max(rows, 0), len(names)), np.nan)
    for column, name in enumerate(names):
        values = [math.nan if v is None else float(v) for v in (given.get(name) or [])[:rows]]
        matrix[: len(values), column] = values
    history = np.array([math.nan if v is None else float(v) for v in request["history_usd_per_mwh"]])
    prices = forecast_ahead(model, start, history, matrix, origin, horizon)
    if not np.isfinite(prices).all():
        raise ValueError("it forecast a non-finite price: retrain it")
    missing = [name for name in names if name not in given]
    detail = None if not missing else (f"without the regressors {', '.join(missing)}, which the request does not carry: "
                                      "each counts as its calibration median")
    return [float(p) for p in prices], detail


def answer_forecast(model, now: Callable[[], float], request: dict[str, Any]) -> dict[str, Any]:
    """The ``forecast_result`` answering ``request`` with ``model`` (None: persistence)."""
    origin, horizon = int(request["interval_start"]), int(request["horizon"])
    history, history_start = request["history_usd_per_mwh"], int(request["history_start"])
    interval_ms = int(request.get("interval_ms") or DEFAULT_INTERVAL_MS)
    method, detail, prices, quantiles = "persistence", "no forecast model configured", None, ([], [])
    if interval_ms <= 0 or _DAY_MS % interval_ms:
        prices, detail = [], f"interval_ms {interval_ms} does not divide a day: no forecast"
    elif model is not None:
        kind = "lear" if isinstance(model, DayAheadModel) else "xgboost"
        try:
            prices, detail = (_dayahead if kind == "lear" else _xgboost)(model, request, interval_ms)
            method = kind
            if kind == "lear":
                p10, _, p90 = quantile_band(model, np.array(prices))
                quantiles = (p10.tolist(), p90.tolist())
        except ValueError as exc:
            detail = f"the {kind} model could not forecast: {exc}"
    if prices is None:
        try:
            prices = persistence_forecast(history, history_start, origin, horizon, interval_ms)
        except ValueError as exc:
            prices, detail = [], str(exc)
    return {"request_id": request["request_id"], "node_path": request["node_path"], "interval_start": origin,
            "method": method, "prices_usd_per_mwh": prices, "p10_usd_per_mwh": quantiles[0],
            "p90_usd_per_mwh": quantiles[1], "detail": detail, "produced_at": int(now() * 1000)}
