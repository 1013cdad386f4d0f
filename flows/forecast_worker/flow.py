"""Flow ``forecast-worker``: ``autobidder.forecast.requests`` -> ``autobidder.forecast.results``.

Answers each request of the autobidder (``flows.autobidder.flow``) with a price forecast for
``horizon`` intervals from the request's interval: the XGBoost model of
``settings.forecast_model_dir`` (``models.forecast``) when one is configured, else, or when the
model cannot forecast, seasonal persistence (the price a day earlier, else the last known price);
``method`` and ``detail`` say which. Stateless: a request read twice is answered twice with the
same content, and the autobidder takes the first answer to its request id.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows._common.environment import flow_from_environment
from flows._common.encode import encode_results
from flows._common.decode import read_decoded
from sinks.ports import KafkaPorts, Ports

__all__ = ["build_flow", "persistence_forecast", "answer_forecast", "INPUT_TOPICS", "OUTPUT_TOPICS", "flow"]

INPUT_TOPICS = ["autobidder.forecast.requests"]
OUTPUT_TOPICS = ("autobidder.forecast.results", "telemetry.dlq")
_INTERVAL_MS = 300_000
_DAY = 288
_AUTO: Any = object()


def persistence_forecast(history: list[float | None], history_start_ms: int, origin_ms: int, horizon: int) -> list[float]:
    """Each interval's price a day earlier when known, else the last known price (pure)."""
    known = {history_start_ms + k * _INTERVAL_MS: v for k, v in enumerate(history) if v is not None and math.isfinite(v)}
    if not known:
        raise ValueError("no known price in the request's history: cannot forecast")
    last = known[max(k for k in known if k < origin_ms)] if any(k < origin_ms for k in known) else known[max(known)]
    out, forecast = [], {}
    for step in range(horizon):
        start = origin_ms + step * _INTERVAL_MS
        value = known.get(start - _DAY * _INTERVAL_MS, forecast.get(start - _DAY * _INTERVAL_MS, last))
        forecast[start] = value
        out.append(float(value))
    return out


def answer_forecast(model, now: Callable[[], float], request: dict[str, Any]) -> dict[str, Any]:
    """The ``forecast_result`` answering ``request`` with ``model`` (None: persistence)."""
    origin, horizon = int(request["interval_start"]), int(request["horizon"])
    history, history_start = request["history_usd_per_mwh"], int(request["history_start"])
    method, detail, prices = "persistence", "no forecast model configured", None
    if model is not None:
        from models.forecast import predict
        from models.optimize import PricePoint

        points = [PricePoint(datetime.fromtimestamp((history_start + k * _INTERVAL_MS) / 1000, timezone.utc), float(v))
                  for k, v in enumerate(history) if v is not None]
        try:
            forecast = predict(model, datetime.fromtimestamp(origin / 1000, timezone.utc), points)
            prices = [p.price_usd_per_mwh for p in forecast][:horizon]
            if len(prices) < horizon:  # the model forecasts 288 intervals: persistence beyond
                prices += persistence_forecast(history, history_start, origin, horizon)[len(prices):]
            method, detail = "xgboost", None
        except ValueError as exc:
            detail = f"the model could not forecast: {exc}"
    if prices is None:
        try:
            prices = persistence_forecast(history, history_start, origin, horizon)
        except ValueError as exc:
            prices, detail = [], str(exc)
    return {"request_id": request["request_id"], "node_path": request["node_path"], "interval_start": origin,
            "method": method, "prices_usd_per_mwh": prices, "detail": detail, "produced_at": int(now() * 1000)}


def load_model(settings):
    """The configured price model, or None (persistence) when ``forecast_model_dir`` is empty."""
    if not settings.forecast_model_dir:
        return None
    from models.forecast import load

    return load(settings.forecast_model_dir)


def build_flow(settings, *, ports: Ports | None = None, model: Any = _AUTO, now: Callable[[], float] = time.time) -> Dataflow:
    ports = ports or KafkaPorts(settings)
    model = load_model(settings) if model is _AUTO else model
    out_topic = ports.topic("autobidder.forecast.results")
    flow = Dataflow("forecast_worker")
    requests, dead = read_decoded(ports, flow, "forecast_in", INPUT_TOPICS)
    results = op.map("forecast", requests, partial(answer_forecast, model, now))
    encoded = op.flat_map_batch("encode", results, partial(encode_results, ports.serde, out_topic))
    ports.write("forecast_out", op.merge("with_dead_letters", encoded, dead))
    return flow


__getattr__ = flow_from_environment(build_flow)
